//! The SQLite store: one file in the data directory, WAL mode, migrations run on open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use corral_core::{
    ApiKeyRecord, ErrorInfo, ExecutionRecord, ExecutionStatus, ExecutionTiming, KeyScope,
    MimeBundle, OutputItem, SessionId, SessionRecord, SessionState, SessionTtl,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::{SessionQuery, Store, StoreError};

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

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

fn session_from_row(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let metadata: String = row.try_get("metadata")?;
    let execution_count: i64 = row.try_get("execution_count")?;
    let resources: String = row.try_get("resources")?;
    let idle_ttl_ms: i64 = row.try_get("idle_ttl_ms")?;
    let max_ttl_ms: i64 = row.try_get("max_ttl_ms")?;
    Ok(SessionRecord {
        id: SessionId::from_str(&id).map_err(|error| StoreError::Corrupt(error.to_string()))?,
        name: row.try_get("name")?,
        runtime: row.try_get("runtime")?,
        state: SessionState::from_str(&state)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        state_reason: row.try_get("state_reason")?,
        created_at: row.try_get("created_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
        execution_count: u64::try_from(execution_count).unwrap_or_default(),
        metadata: from_json(&metadata, "session metadata")?,
        // Records written before ended sessions were stored as not accepting say so too.
        accepting_executions: row.try_get::<bool, _>("accepting_executions")?
            && !matches!(state.as_str(), "closed" | "dead"),
        resources: from_json(&resources, "session resources")?,
        ttl: SessionTtl {
            idle: Duration::from_millis(u64::try_from(idle_ttl_ms).unwrap_or_default()),
            max: Duration::from_millis(u64::try_from(max_ttl_ms).unwrap_or_default()),
        },
        tenant: row.try_get("tenant")?,
    })
}

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    let scope: String = row.try_get("scope")?;
    let session_id: Option<String> = row.try_get("session_id")?;
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: KeyScope::parse(&scope)
            .ok_or_else(|| StoreError::Corrupt(format!("key scope {scope:?}")))?,
        tenant: row.try_get("tenant")?,
        session_id: session_id
            .map(|id| SessionId::from_str(&id))
            .transpose()
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        secret_sha256: row.try_get("secret_sha256")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn duration_to_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn execution_from_row(row: &SqliteRow) -> Result<ExecutionRecord, StoreError> {
    let session_id: String = row.try_get("session_id")?;
    let status: String = row.try_get("status")?;
    let result: Option<String> = row.try_get("result")?;
    let outputs: String = row.try_get("outputs")?;
    let error: Option<String> = row.try_get("error")?;
    let execution_count: i64 = row.try_get("execution_count")?;
    let duration_ms: i64 = row.try_get("duration_ms")?;
    Ok(ExecutionRecord {
        session_id: SessionId::from_str(&session_id)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        execution_count: u64::try_from(execution_count).unwrap_or_default(),
        code: row.try_get("code")?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("execution status {status:?}")))?,
        result: result
            .map(|text| from_json::<MimeBundle>(&text, "execution result"))
            .transpose()?,
        stdout: row.try_get("stdout")?,
        stderr: row.try_get("stderr")?,
        outputs: from_json::<Vec<OutputItem>>(&outputs, "execution outputs")?,
        error: error
            .map(|text| from_json::<ErrorInfo>(&text, "execution error"))
            .transpose()?,
        duration_ms: u64::try_from(duration_ms).unwrap_or_default(),
        truncated: row.try_get("truncated")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

fn count_to_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

const UPDATE_SESSION: &str =
    "UPDATE sessions SET name = ?, runtime = ?, state = ?, state_reason = ?, \
     created_at = ?, last_activity_at = ?, execution_count = ?, metadata = ?, \
     accepting_executions = ?, idle_ttl_ms = ?, max_ttl_ms = ?, tenant = ? WHERE id = ?";

#[async_trait]
impl Store for SqliteStore {
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, name, runtime, state, state_reason, created_at, \
             last_activity_at, execution_count, metadata, accepting_executions, resources, \
             idle_ttl_ms, max_ttl_ms, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    async fn record_execution(
        &self,
        execution: &ExecutionRecord,
        session: &SessionRecord,
        keep_last: u64,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO executions (session_id, execution_count, code, status, result, stdout, \
             stderr, outputs, error, duration_ms, truncated, started_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(execution.session_id.to_string())
        .bind(count_to_i64(execution.execution_count))
        .bind(&execution.code)
        .bind(execution.status.as_str())
        .bind(execution.result.as_ref().map(to_json).transpose()?)
        .bind(&execution.stdout)
        .bind(&execution.stderr)
        .bind(to_json(&execution.outputs)?)
        .bind(execution.error.as_ref().map(to_json).transpose()?)
        .bind(count_to_i64(execution.duration_ms))
        .bind(execution.truncated)
        .bind(execution.started_at)
        .bind(execution.finished_at)
        .execute(&mut *transaction)
        .await?;
        bind_session_update(sqlx::query(UPDATE_SESSION), session)?
            .execute(&mut *transaction)
            .await?;
        let oldest_kept = execution
            .execution_count
            .saturating_sub(keep_last.saturating_sub(1));
        if oldest_kept > 1 {
            sqlx::query("DELETE FROM executions WHERE session_id = ? AND execution_count < ?")
                .bind(execution.session_id.to_string())
                .bind(count_to_i64(oldest_kept))
                .execute(&mut *transaction)
                .await?;
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
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                let execution_count: i64 = row.try_get("execution_count")?;
                let duration_ms: i64 = row.try_get("duration_ms")?;
                Ok(ExecutionTiming {
                    execution_count: u64::try_from(execution_count).unwrap_or_default(),
                    status: ExecutionStatus::parse(&status).ok_or_else(|| {
                        StoreError::Corrupt(format!("execution status {status:?}"))
                    })?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    duration_ms: u64::try_from(duration_ms).unwrap_or_default(),
                })
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: DateTime<Utc>) -> SessionRecord {
        let mut metadata = serde_json::Map::new();
        metadata.insert("owner".into(), serde_json::json!("tests"));
        SessionRecord::new(
            SessionId::new(),
            "python3".into(),
            Some("one".into()),
            metadata,
            SessionTtl {
                idle: Duration::from_secs(60),
                max: Duration::from_millis(3_600_500),
            },
            now,
        )
    }

    #[tokio::test]
    async fn sessions_and_executions_survive_reopening() {
        let directory = tempfile::tempdir().expect("tempdir");
        let now = Utc::now();
        let mut record = session(now);
        {
            let store = SqliteStore::open(directory.path()).await.expect("open");
            store.insert_session(&record).await.expect("insert");
            record.state = SessionState::Idle;
            record.execution_count = 1;
            let execution = ExecutionRecord {
                session_id: record.id,
                execution_count: 1,
                code: "1 + 1".into(),
                status: ExecutionStatus::Ok,
                result: Some(
                    serde_json::from_value(serde_json::json!({"text/plain": "2"})).expect("bundle"),
                ),
                stdout: "out".into(),
                stderr: String::new(),
                outputs: vec![OutputItem::Stream {
                    name: corral_core::StreamName::Stdout,
                    text: "out".into(),
                }],
                error: None,
                duration_ms: 3,
                truncated: false,
                started_at: now,
                finished_at: now,
            };
            store
                .record_execution(&execution, &record, 1000)
                .await
                .expect("record");
            store.close().await;
        }
        let store = SqliteStore::open(directory.path()).await.expect("reopen");
        assert_eq!(
            store
                .mark_live_sessions_dead("server restarted", now)
                .await
                .expect("mark"),
            1
        );
        let back = store
            .get_session(record.id)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(back.state, SessionState::Dead);
        assert_eq!(back.state_reason.as_deref(), Some("server restarted"));
        assert_eq!(back.execution_count, 1);
        assert_eq!(back.metadata, record.metadata);
        assert_eq!(back.ttl, record.ttl);
        let execution = store
            .get_execution(record.id, 1)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(execution.stdout, "out");
        assert_eq!(execution.outputs.len(), 1);
        let listed = store
            .list_executions(record.id, None, 10)
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);

        // Retention: removed only once it ended before the cut-off, with its history.
        assert_eq!(
            store.oldest_ended_session().await.expect("oldest"),
            Some(now)
        );
        assert_eq!(store.remove_ended_sessions(now).await.expect("remove"), 0);
        let later = now + chrono::Duration::seconds(1);
        assert_eq!(store.remove_ended_sessions(later).await.expect("remove"), 1);
        assert!(store.get_session(record.id).await.expect("get").is_none());
        assert!(store
            .get_execution(record.id, 1)
            .await
            .expect("get")
            .is_none());
        assert_eq!(store.oldest_ended_session().await.expect("oldest"), None);
    }

    #[tokio::test]
    async fn listing_pages_by_id_and_filters_by_state() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(directory.path()).await.expect("open");
        let now = Utc::now();
        let mut ids = Vec::new();
        for index in 0..5 {
            let mut record = session(now);
            if index % 2 == 0 {
                record.state = SessionState::Closed;
            }
            store.insert_session(&record).await.expect("insert");
            ids.push(record.id);
        }
        let first = store
            .list_sessions(&SessionQuery {
                state: None,
                tenant: None,
                after: None,
                limit: 2,
            })
            .await
            .expect("list");
        assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..2]);
        let rest = store
            .list_sessions(&SessionQuery {
                state: None,
                tenant: None,
                after: Some(ids[1]),
                limit: 10,
            })
            .await
            .expect("list");
        assert_eq!(rest.iter().map(|s| s.id).collect::<Vec<_>>(), ids[2..]);
        let closed = store
            .list_sessions(&SessionQuery {
                state: Some(SessionState::Closed),
                tenant: None,
                after: None,
                limit: 10,
            })
            .await
            .expect("list");
        assert_eq!(closed.len(), 3);
    }

    #[tokio::test]
    async fn api_keys_are_stored_listed_by_tenant_and_revoked() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(directory.path()).await.expect("open");
        assert!(!store.has_active_api_keys().await.expect("query"));
        let key = |id: &str, tenant: Option<&str>| ApiKeyRecord {
            id: id.into(),
            name: Some("ci".into()),
            scope: if tenant.is_some() {
                KeyScope::Tenant
            } else {
                KeyScope::Admin
            },
            tenant: tenant.map(str::to_owned),
            session_id: None,
            secret_sha256: "00".repeat(32),
            expires_at: None,
            created_at: Utc::now(),
            revoked_at: None,
        };
        store
            .insert_api_key(&key("a1", Some("a")))
            .await
            .expect("insert");
        store
            .insert_api_key(&key("b1", Some("b")))
            .await
            .expect("insert");
        store
            .insert_api_key(&key("root", None))
            .await
            .expect("insert");
        assert!(store.has_active_api_keys().await.expect("query"));
        assert_eq!(store.list_api_keys(None).await.expect("list").len(), 3);
        let only_a = store.list_api_keys(Some("a")).await.expect("list");
        assert_eq!(
            only_a.iter().map(|key| key.id.as_str()).collect::<Vec<_>>(),
            ["a1"]
        );
        assert_eq!(only_a[0].tenant.as_deref(), Some("a"));
        assert!(store
            .revoke_api_key("a1", Utc::now())
            .await
            .expect("revoke"));
        assert!(!store.revoke_api_key("a1", Utc::now()).await.expect("again"));
        assert!(!store
            .revoke_api_key("nope", Utc::now())
            .await
            .expect("unknown"));
        let revoked = store
            .get_api_key("a1")
            .await
            .expect("get")
            .expect("present");
        assert!(revoked.revoked_at.is_some());
        store
            .revoke_api_key("b1", Utc::now())
            .await
            .expect("revoke");
        store
            .revoke_api_key("root", Utc::now())
            .await
            .expect("revoke");
        assert!(!store.has_active_api_keys().await.expect("query"));

        // A session key reaches one session: it does not end open mode.
        let record = session(Utc::now());
        store.insert_session(&record).await.expect("insert");
        store
            .insert_api_key(&ApiKeyRecord {
                scope: KeyScope::Session,
                tenant: Some(record.tenant.clone()),
                session_id: Some(record.id),
                ..key("s1", None)
            })
            .await
            .expect("insert");
        assert!(!store.has_active_api_keys().await.expect("query"));
    }
}
