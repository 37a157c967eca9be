//! Turning rows into corral's records and back: the JSON columns, ids, counts and
//! durations, shared by both backends.
//!
//! The row decoders are one macro ([`row_decoders!`]) that each backend expands for its own
//! row type, so the two stores cannot read a column differently. No SQL lives here.

use std::time::Duration;

use crate::StoreError;

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// The JSON columns of an execution row, encoded ahead of building a multi-row insert.
pub(crate) struct ExecutionJson {
    pub(crate) result: Option<String>,
    pub(crate) outputs: String,
    pub(crate) error: Option<String>,
}

impl ExecutionJson {
    pub(crate) fn of(execution: &corral_core::ExecutionRecord) -> Result<Self, StoreError> {
        Ok(ExecutionJson {
            result: execution.result.as_ref().map(to_json).transpose()?,
            outputs: to_json(&execution.outputs)?,
            error: execution.error.as_ref().map(to_json).transpose()?,
        })
    }
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

pub(crate) fn duration_to_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn count_to_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(crate) fn count_from_i64(count: i64) -> u64 {
    u64::try_from(count).unwrap_or_default()
}

/// Expands to `session_from_row`, `api_key_from_row`, `execution_from_row`,
/// `timing_from_row` and `node_from_row` for one backend's row type.
macro_rules! row_decoders {
    ($row:ty) => {
        fn session_from_row(row: &$row) -> Result<corral_core::SessionRecord, $crate::StoreError> {
            use sqlx::Row;
            use std::str::FromStr;
            let id: String = row.try_get("id")?;
            let state: String = row.try_get("state")?;
            let metadata: String = row.try_get("metadata")?;
            let execution_count: i64 = row.try_get("execution_count")?;
            let resources: String = row.try_get("resources")?;
            let network: String = row.try_get("network")?;
            let egress_ports: String = row.try_get("egress_ports")?;
            let idle_ttl_ms: i64 = row.try_get("idle_ttl_ms")?;
            let max_ttl_ms: i64 = row.try_get("max_ttl_ms")?;
            Ok(corral_core::SessionRecord {
                id: corral_core::SessionId::from_str(&id)
                    .map_err(|error| $crate::StoreError::Corrupt(error.to_string()))?,
                name: row.try_get("name")?,
                runtime: row.try_get("runtime")?,
                state: corral_core::SessionState::from_str(&state)
                    .map_err(|error| $crate::StoreError::Corrupt(error.to_string()))?,
                state_reason: row.try_get("state_reason")?,
                created_at: row.try_get("created_at")?,
                last_activity_at: row.try_get("last_activity_at")?,
                execution_count: $crate::records::count_from_i64(execution_count),
                metadata: $crate::records::from_json(&metadata, "session metadata")?,
                // Records written before ended sessions were stored as not accepting say so
                // too.
                accepting_executions: row.try_get::<bool, _>("accepting_executions")?
                    && !matches!(state.as_str(), "closed" | "dead"),
                resources: $crate::records::from_json(&resources, "session resources")?,
                network: $crate::records::from_json(&network, "session network")?,
                egress_ports: $crate::records::from_json(&egress_ports, "session egress ports")?,
                ttl: corral_core::SessionTtl {
                    idle: std::time::Duration::from_millis($crate::records::count_from_i64(
                        idle_ttl_ms,
                    )),
                    max: std::time::Duration::from_millis($crate::records::count_from_i64(
                        max_ttl_ms,
                    )),
                },
                tenant: row.try_get("tenant")?,
            })
        }

        fn api_key_from_row(row: &$row) -> Result<corral_core::ApiKeyRecord, $crate::StoreError> {
            use sqlx::Row;
            use std::str::FromStr;
            let scope: String = row.try_get("scope")?;
            let session_id: Option<String> = row.try_get("session_id")?;
            Ok(corral_core::ApiKeyRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                scope: corral_core::KeyScope::parse(&scope)
                    .ok_or_else(|| $crate::StoreError::Corrupt(format!("key scope {scope:?}")))?,
                tenant: row.try_get("tenant")?,
                session_id: session_id
                    .map(|id| corral_core::SessionId::from_str(&id))
                    .transpose()
                    .map_err(|error| $crate::StoreError::Corrupt(error.to_string()))?,
                secret_sha256: row.try_get("secret_sha256")?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        }

        fn execution_from_row(
            row: &$row,
        ) -> Result<corral_core::ExecutionRecord, $crate::StoreError> {
            use sqlx::Row;
            use std::str::FromStr;
            let session_id: String = row.try_get("session_id")?;
            let status: String = row.try_get("status")?;
            let result: Option<String> = row.try_get("result")?;
            let outputs: String = row.try_get("outputs")?;
            let error: Option<String> = row.try_get("error")?;
            let execution_count: i64 = row.try_get("execution_count")?;
            let duration_ms: i64 = row.try_get("duration_ms")?;
            Ok(corral_core::ExecutionRecord {
                session_id: corral_core::SessionId::from_str(&session_id)
                    .map_err(|error| $crate::StoreError::Corrupt(error.to_string()))?,
                execution_count: $crate::records::count_from_i64(execution_count),
                code: row.try_get("code")?,
                status: corral_core::ExecutionStatus::parse(&status).ok_or_else(|| {
                    $crate::StoreError::Corrupt(format!("execution status {status:?}"))
                })?,
                result: result
                    .map(|text| $crate::records::from_json(&text, "execution result"))
                    .transpose()?,
                stdout: row.try_get("stdout")?,
                stderr: row.try_get("stderr")?,
                outputs: $crate::records::from_json(&outputs, "execution outputs")?,
                error: error
                    .map(|text| $crate::records::from_json(&text, "execution error"))
                    .transpose()?,
                duration_ms: $crate::records::count_from_i64(duration_ms),
                truncated: row.try_get("truncated")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
            })
        }

        fn timing_from_row(row: &$row) -> Result<corral_core::ExecutionTiming, $crate::StoreError> {
            use sqlx::Row;
            let status: String = row.try_get("status")?;
            let execution_count: i64 = row.try_get("execution_count")?;
            let duration_ms: i64 = row.try_get("duration_ms")?;
            Ok(corral_core::ExecutionTiming {
                execution_count: $crate::records::count_from_i64(execution_count),
                status: corral_core::ExecutionStatus::parse(&status).ok_or_else(|| {
                    $crate::StoreError::Corrupt(format!("execution status {status:?}"))
                })?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                duration_ms: $crate::records::count_from_i64(duration_ms),
            })
        }

        fn node_from_row(row: &$row) -> Result<corral_core::NodeRecord, $crate::StoreError> {
            use sqlx::Row;
            let live_sessions: i64 = row.try_get("live_sessions")?;
            let max_sessions: i64 = row.try_get("max_sessions")?;
            let available: Option<i64> = row.try_get("available_memory_bytes")?;
            let worker_memory: i64 = row.try_get("worker_memory_bytes")?;
            Ok(corral_core::NodeRecord {
                id: row.try_get("id")?,
                advertise_url: row.try_get("advertise_url")?,
                started_at: row.try_get("started_at")?,
                renewed_at: row.try_get("renewed_at")?,
                lease_expires_at: row.try_get("lease_expires_at")?,
                lost_at: row.try_get("lost_at")?,
                load: corral_core::NodeLoad {
                    live_sessions: $crate::records::count_from_i64(live_sessions),
                    max_sessions: $crate::records::count_from_i64(max_sessions),
                    available_memory_bytes: available.map($crate::records::count_from_i64),
                    worker_memory_bytes: $crate::records::count_from_i64(worker_memory),
                },
            })
        }
    };
}

pub(crate) use row_decoders;

/// A session id as stored.
pub(crate) fn session_id_of(text: &str) -> Result<corral_core::SessionId, crate::StoreError> {
    <corral_core::SessionId as std::str::FromStr>::from_str(text)
        .map_err(|error| crate::StoreError::Corrupt(error.to_string()))
}
