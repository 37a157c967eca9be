//! The SQLite store: one file in the data directory, WAL mode, migrations run on open.
//!
//! One writer at a time (SQLite's own lock), so conditional single statements are enough for
//! what PostgreSQL needs locks for (a tenant's live-session limit, declaring a node lost).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_core::{
    ApiKeyRecord, ExecutionRecord, ExecutionTiming, NodeLoad, NodeRecord, SessionId, SessionRecord,
    SessionState,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::records::{
    count_to_i64, duration_to_ms, row_decoders, session_id_of, to_json, ExecutionJson,
};
use crate::{ClaimedInsert, ExecutionWrite, SessionQuery, Store, StoreError, CLAIM_ATTEMPTS};

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "corral.sqlite3";

/// A store backed by one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) `corral.sqlite3` in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDirectory {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses nothing on a process crash (kill -9); only an OS crash
            // can drop the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

row_decoders!(SqliteRow);

const UPDATE_SESSION: &str =
    "UPDATE sessions SET name = ?, runtime = ?, state = ?, state_reason = ?, \
     created_at = ?, last_activity_at = ?, execution_count = ?, metadata = ?, \
     accepting_executions = ?, idle_ttl_ms = ?, max_ttl_ms = ?, tenant = ? \
     WHERE id = ? AND state NOT IN ('closed', 'dead')";

/// [`UPDATE_SESSION`] for a dead session being revived.
const REVIVE_SESSION: &str =
    "UPDATE sessions SET name = ?, runtime = ?, state = ?, state_reason = ?, \
     created_at = ?, last_activity_at = ?, execution_count = ?, metadata = ?, \
     accepting_executions = ?, idle_ttl_ms = ?, max_ttl_ms = ?, tenant = ?, \
     claim = CASE WHEN EXISTS (SELECT 1 FROM sessions AS holder WHERE holder.tenant = sessions.tenant \
     AND holder.claim = sessions.claim AND holder.id <> sessions.id \
     AND holder.state NOT IN ('closed', 'dead')) THEN NULL ELSE claim END, \
     egress_ports = ?14 WHERE id = ?13 AND state = 'dead'";

#[async_trait]
impl Store for SqliteStore {
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, name, runtime, state, state_reason, created_at, \
             last_activity_at, execution_count, metadata, accepting_executions, resources, \
             idle_ttl_ms, max_ttl_ms, tenant, network, egress_ports) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(session.id.to_string())
        .bind(&session.name)
        .bind(&session.runtime)
        .bind(session.state.as_str())
        .bind(&session.state_reason)
        .bind(session.created_at)
        .bind(session.last_activity_at)
        .bind(count_to_i64(session.execution_count))
        .bind(to_json(&session.metadata)?)
        .bind(session.accepting_executions)
        .bind(to_json(&session.resources)?)
        .bind(duration_to_ms(session.ttl.idle))
        .bind(duration_to_ms(session.ttl.max))
        .bind(&session.tenant)
        .bind(to_json(&session.network)?)
        .bind(to_json(&session.egress_ports)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn update_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        bind_session_update(sqlx::query(UPDATE_SESSION), session)?
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn revive_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        // A revived session has a fresh worker, so fresh network rules and proxy ports.
        let done = bind_session_update(sqlx::query(REVIVE_SESSION), session)?
            .bind(to_json(&session.egress_ports)?)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_session(&self, id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list_sessions(&self, query: &SessionQuery) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM sessions WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR id > ?2) \
             AND (?4 IS NULL OR tenant = ?4) ORDER BY id LIMIT ?3",
        )
        .bind(query.state.map(SessionState::as_str))
        .bind(query.after.map(|id| id.to_string()))
        .bind(i64::from(query.limit))
        .bind(query.tenant.as_deref())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn record_executions(&self, batch: &[ExecutionWrite]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        insert_executions(&mut transaction, batch).await?;
        for write in batch {
            update_session_and_trim(&mut transaction, write).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn remove_ended_sessions(&self, ended_before: DateTime<Utc>) -> Result<u64, StoreError> {
        const ENDED: &str = "SELECT id FROM sessions \
             WHERE state IN ('closed', 'dead') AND last_activity_at < ?";
        let mut transaction = self.pool.begin().await?;
        for table in ["executions", "api_keys"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE session_id IN ({ENDED})"
            ))
            .bind(ended_before)
            .execute(&mut *transaction)
            .await?;
        }
        let removed = sqlx::query(
            "DELETE FROM sessions WHERE state IN ('closed', 'dead') AND last_activity_at < ?",
        )
        .bind(ended_before)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(removed)
    }

    async fn oldest_ended_session(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(last_activity_at) AS ended FROM sessions WHERE state IN ('closed', 'dead')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<DateTime<Utc>>, _>("ended")?)
    }

    async fn get_execution(
        &self,
        session_id: SessionId,
        execution_count: u64,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM executions WHERE session_id = ? AND execution_count = ?")
                .bind(session_id.to_string())
                .bind(count_to_i64(execution_count))
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(execution_from_row).transpose()
    }

    async fn list_execution_timings(
        &self,
        session_id: SessionId,
    ) -> Result<Vec<ExecutionTiming>, StoreError> {
        let rows = sqlx::query(
            "SELECT execution_count, status, started_at, finished_at, duration_ms \
             FROM executions WHERE session_id = ? ORDER BY execution_count",
        )
        .bind(session_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(timing_from_row).collect()
    }

    async fn list_executions(
        &self,
        session_id: SessionId,
        after_count: Option<u64>,
        limit: u32,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM executions WHERE session_id = ? AND execution_count > ? \
             ORDER BY execution_count LIMIT ?",
        )
        .bind(session_id.to_string())
        .bind(after_count.map(count_to_i64).unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn mark_live_sessions_dead(
        &self,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE sessions SET state = 'dead', state_reason = ?, last_activity_at = ?, \
             accepting_executions = 0 WHERE state NOT IN ('closed', 'dead')",
        )
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        if let Some(tenant) = &key.tenant {
            sqlx::query("INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?, ?)")
                .bind(tenant)
                .bind(key.created_at)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(
            "INSERT INTO api_keys (id, name, scope, tenant, session_id, secret_sha256, \
             created_at, revoked_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.scope.as_str())
        .bind(&key.tenant)
        .bind(key.session_id.map(|id| id.to_string()))
        .bind(&key.secret_sha256)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .bind(key.expires_at)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn has_active_api_keys(&self) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM api_keys \
             WHERE revoked_at IS NULL AND scope <> 'session') AS active",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("active")?)
    }

    async fn insert_owned_session(
        &self,
        session: &SessionRecord,
        owner: &str,
        max_live_in_tenant: Option<u64>,
    ) -> Result<bool, StoreError> {
        // One statement: SQLite runs it under its write lock, so the count and the insert
        // cannot interleave with another writer's.
        let limit = max_live_in_tenant.map(count_to_i64);
        let result = sqlx::query(
            "INSERT INTO sessions (id, name, runtime, state, state_reason, created_at, \
             last_activity_at, execution_count, metadata, accepting_executions, resources, \
             idle_ttl_ms, max_ttl_ms, tenant, owner_node, network, egress_ports) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?17, ?18 \
             WHERE ?16 IS NULL OR (SELECT COUNT(*) FROM sessions WHERE tenant = ?14 \
             AND state NOT IN ('closed', 'dead')) < ?16",
        )
        .bind(session.id.to_string())
        .bind(&session.name)
        .bind(&session.runtime)
        .bind(session.state.as_str())
        .bind(&session.state_reason)
        .bind(session.created_at)
        .bind(session.last_activity_at)
        .bind(count_to_i64(session.execution_count))
        .bind(to_json(&session.metadata)?)
        .bind(session.accepting_executions)
        .bind(to_json(&session.resources)?)
        .bind(duration_to_ms(session.ttl.idle))
        .bind(duration_to_ms(session.ttl.max))
        .bind(&session.tenant)
        .bind(owner)
        .bind(limit)
        .bind(to_json(&session.network)?)
        .bind(to_json(&session.egress_ports)?)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn insert_claimed_session(
        &self,
        session: &SessionRecord,
        claim: &str,
        owner: Option<&str>,
        max_live_in_tenant: Option<u64>,
    ) -> Result<ClaimedInsert, StoreError> {
        let limit = max_live_in_tenant.map(count_to_i64);
        for _ in 0..CLAIM_ATTEMPTS {
            // One statement: SQLite runs it under its write lock, so neither the claim check
            // nor the count can interleave with another writer's insert.
            let result = sqlx::query(
                "INSERT INTO sessions (id, name, runtime, state, state_reason, created_at, \
                 last_activity_at, execution_count, metadata, accepting_executions, resources, \
                 idle_ttl_ms, max_ttl_ms, tenant, owner_node, network, egress_ports, claim) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?17, ?18, ?19 \
                 WHERE NOT EXISTS (SELECT 1 FROM sessions WHERE tenant = ?14 AND claim = ?19 \
                 AND state NOT IN ('closed', 'dead')) \
                 AND (?16 IS NULL OR (SELECT COUNT(*) FROM sessions WHERE tenant = ?14 \
                 AND state NOT IN ('closed', 'dead')) < ?16)",
            )
            .bind(session.id.to_string())
            .bind(&session.name)
            .bind(&session.runtime)
            .bind(session.state.as_str())
            .bind(&session.state_reason)
            .bind(session.created_at)
            .bind(session.last_activity_at)
            .bind(count_to_i64(session.execution_count))
            .bind(to_json(&session.metadata)?)
            .bind(session.accepting_executions)
            .bind(to_json(&session.resources)?)
            .bind(duration_to_ms(session.ttl.idle))
            .bind(duration_to_ms(session.ttl.max))
            .bind(&session.tenant)
            .bind(owner)
            .bind(limit)
            .bind(to_json(&session.network)?)
            .bind(to_json(&session.egress_ports)?)
            .bind(claim)
            .execute(&self.pool)
            .await?;
            if result.rows_affected() == 1 {
                return Ok(ClaimedInsert::Inserted);
            }
            if let Some(holder) = self.claimed_session(&session.tenant, claim).await? {
                return Ok(ClaimedInsert::AlreadyClaimed(holder));
            }
            if limit.is_some() {
                return Ok(ClaimedInsert::TenantFull);
            }
            // The holder ended between the insert and the look-up: try again.
        }
        Ok(ClaimedInsert::TenantFull)
    }

    async fn hold_claim(
        &self,
        id: SessionId,
        claim: &str,
        from: Option<SessionId>,
    ) -> Result<Option<SessionId>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        if let Some(from) = from {
            sqlx::query("UPDATE sessions SET claim = NULL WHERE id = ? AND claim = ?")
                .bind(from.to_string())
                .bind(claim)
                .execute(&mut *transaction)
                .await?;
        }
        // One statement: the check and the change happen under SQLite's write lock.
        let held = sqlx::query(
            "UPDATE sessions SET claim = ?1 WHERE id = ?2 AND state NOT IN ('closed', 'dead') \
             AND NOT EXISTS (SELECT 1 FROM sessions AS holder WHERE holder.tenant = sessions.tenant \
             AND holder.claim = ?1 AND holder.id <> ?2 AND holder.state NOT IN ('closed', 'dead'))",
        )
        .bind(claim)
        .bind(id.to_string())
        .execute(&mut *transaction)
        .await?
        .rows_affected()
            == 1;
        if !held {
            let holder: Option<String> = sqlx::query_scalar(
                "SELECT holder.id FROM sessions AS holder JOIN sessions AS wanting \
                 ON wanting.tenant = holder.tenant WHERE wanting.id = ?2 AND holder.claim = ?1 \
                 AND holder.id <> ?2 AND holder.state NOT IN ('closed', 'dead')",
            )
            .bind(claim)
            .bind(id.to_string())
            .fetch_optional(&mut *transaction)
            .await?;
            if let Some(holder) = holder {
                transaction.rollback().await?;
                return Ok(Some(session_id_of(&holder)?));
            }
        }
        transaction.commit().await?;
        Ok(None)
    }

    async fn release_claim(&self, id: SessionId, claim: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET claim = NULL WHERE id = ? AND claim = ?")
            .bind(id.to_string())
            .bind(claim)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claimed_session(
        &self,
        tenant: &str,
        claim: &str,
    ) -> Result<Option<SessionId>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE tenant = ? AND claim = ? \
             AND state NOT IN ('closed', 'dead')",
        )
        .bind(tenant)
        .bind(claim)
        .fetch_optional(&self.pool)
        .await?;
        id.as_deref().map(session_id_of).transpose()
    }

    async fn session_owner(&self, id: SessionId) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT owner_node FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("owner_node")?,
            None => None,
        })
    }

    async fn mark_node_sessions_dead(
        &self,
        node: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE sessions SET state = 'dead', state_reason = ?, last_activity_at = ?, \
             accepting_executions = 0 \
             WHERE owner_node = ? AND state NOT IN ('closed', 'dead')",
        )
        .bind(reason)
        .bind(now)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn register_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, advertise_url, started_at, renewed_at, lease_expires_at, \
             lost_at, live_sessions, max_sessions, available_memory_bytes, worker_memory_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9) \
             ON CONFLICT (id) DO UPDATE SET advertise_url = ?2, started_at = ?3, \
             renewed_at = ?4, lease_expires_at = ?5, lost_at = NULL, live_sessions = ?6, \
             max_sessions = ?7, available_memory_bytes = ?8, worker_memory_bytes = ?9",
        )
        .bind(&node.id)
        .bind(&node.advertise_url)
        .bind(node.started_at)
        .bind(node.renewed_at)
        .bind(node.lease_expires_at)
        .bind(count_to_i64(node.load.live_sessions))
        .bind(count_to_i64(node.load.max_sessions))
        .bind(node.load.available_memory_bytes.map(count_to_i64))
        .bind(count_to_i64(node.load.worker_memory_bytes))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn renew_node_lease(
        &self,
        id: &str,
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
        load: &NodeLoad,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE nodes SET renewed_at = ?, lease_expires_at = ?, live_sessions = ?, \
             max_sessions = ?, available_memory_bytes = ?, worker_memory_bytes = ? \
             WHERE id = ? AND lost_at IS NULL",
        )
        .bind(now)
        .bind(lease_expires_at)
        .bind(count_to_i64(load.live_sessions))
        .bind(count_to_i64(load.max_sessions))
        .bind(load.available_memory_bytes.map(count_to_i64))
        .bind(count_to_i64(load.worker_memory_bytes))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn declare_lapsed_nodes_lost(
        &self,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let lapsed: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM nodes WHERE lost_at IS NULL AND lease_expires_at < ? ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut lost = Vec::new();
        for id in lapsed {
            let mut transaction = self.pool.begin().await?;
            let won = sqlx::query(
                "UPDATE nodes SET lost_at = ? \
                 WHERE id = ? AND lost_at IS NULL AND lease_expires_at < ?",
            )
            .bind(now)
            .bind(&id)
            .bind(now)
            .execute(&mut *transaction)
            .await?
            .rows_affected()
                == 1;
            if !won {
                continue;
            }
            let sessions = sqlx::query(
                "UPDATE sessions SET state = 'dead', state_reason = ?, last_activity_at = ?, \
             accepting_executions = 0 \
                 WHERE owner_node = ? AND state NOT IN ('closed', 'dead')",
            )
            .bind(reason)
            .bind(now)
            .bind(&id)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            transaction.commit().await?;
            lost.push((id, sessions));
        }
        Ok(lost)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

fn bind_session_update<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    session: &'q SessionRecord,
) -> Result<sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>, StoreError> {
    Ok(query
        .bind(&session.name)
        .bind(&session.runtime)
        .bind(session.state.as_str())
        .bind(&session.state_reason)
        .bind(session.created_at)
        .bind(session.last_activity_at)
        .bind(count_to_i64(session.execution_count))
        .bind(to_json(&session.metadata)?)
        .bind(session.accepting_executions)
        .bind(duration_to_ms(session.ttl.idle))
        .bind(duration_to_ms(session.ttl.max))
        .bind(&session.tenant)
        .bind(session.id.to_string()))
}

/// Inserts every execution of `batch` with one multi-row `INSERT` (one statement, so one
/// hand-off to the database, however large the batch).
async fn insert_executions(
    connection: &mut sqlx::SqliteConnection,
    batch: &[ExecutionWrite],
) -> Result<(), StoreError> {
    let json = batch
        .iter()
        .map(|write| ExecutionJson::of(&write.execution))
        .collect::<Result<Vec<_>, _>>()?;
    let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO executions (session_id, execution_count, code, status, result, stdout, \
         stderr, outputs, error, duration_ms, truncated, started_at, finished_at) ",
    );
    insert.push_values(batch.iter().zip(&json), |mut row, (write, json)| {
        let execution = &write.execution;
        row.push_bind(execution.session_id.to_string())
            .push_bind(count_to_i64(execution.execution_count))
            .push_bind(execution.code.as_str())
            .push_bind(execution.status.as_str())
            .push_bind(json.result.as_deref())
            .push_bind(execution.stdout.as_str())
            .push_bind(execution.stderr.as_str())
            .push_bind(json.outputs.as_str())
            .push_bind(json.error.as_deref())
            .push_bind(count_to_i64(execution.duration_ms))
            .push_bind(execution.truncated)
            .push_bind(execution.started_at)
            .push_bind(execution.finished_at);
    });
    insert.build().execute(&mut *connection).await?;
    Ok(())
}

/// After its execution is inserted: the session's new state and the history trim, on
/// `connection` (inside the caller's transaction).
async fn update_session_and_trim(
    connection: &mut sqlx::SqliteConnection,
    write: &ExecutionWrite,
) -> Result<(), StoreError> {
    let ExecutionWrite {
        execution,
        session,
        keep_last,
    } = write;
    let keep_last = *keep_last;
    bind_session_update(sqlx::query(UPDATE_SESSION), session)?
        .execute(&mut *connection)
        .await?;
    let oldest_kept = execution
        .execution_count
        .saturating_sub(keep_last.saturating_sub(1));
    if oldest_kept > 1 {
        sqlx::query("DELETE FROM executions WHERE session_id = ? AND execution_count < ?")
            .bind(execution.session_id.to_string())
            .bind(count_to_i64(oldest_kept))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}
