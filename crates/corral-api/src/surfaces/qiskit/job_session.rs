//! The `JobSession` object (create and get) and how it is derived from a corral session: its
//! record, the `qiskit` part of its metadata, and the start and end times of its executions
//! (the "jobs"), so that it reads the same after a server restart.
//!
//! The state mapping: a session with no execution yet is `open`; `active` while an execution
//! runs; `inactive` when idle after at least one; `closed` once closed or dead. `timestamps`
//! lists every transition: `open` at creation, `active` at each execution's start,
//! `inactive` at its end (except an execution cut short by the session's end), `closed` at
//! the end. Executions older than the operator's `executions_kept_per_session` are no longer
//! stored; their transitions are then missing from `timestamps`. Reading the history is not
//! this module's job (see `super::get_session`).

use chrono::{DateTime, SecondsFormat, Utc};
use corral_core::{ExecutionStatus, ExecutionTiming, SessionRecord, SessionState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Metadata key under which the Qiskit fields of a session are kept.
pub const METADATA_KEY: &str = "qiskit";

/// Execution mode of a session (`mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Batch,
    Dedicated,
}

/// A session's state as this API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobSessionState {
    Open,
    Active,
    Inactive,
    Closed,
}

/// One entry of `timestamps`: the state entered, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateTimestamp {
    pub status: JobSessionState,
    /// RFC 3339, milliseconds, UTC (`2023-10-01T00:00:00.000Z`).
    pub timestamp: String,
}

/// `JobSession` (`CreateSession200Response`). Every key is always present; unknown values
/// are `null`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobSession {
    /// The session id (the corral session id).
    pub id: String,
    /// The corral runtime the session runs (`python3`).
    pub backend_name: Option<String>,
    pub started_at: Option<String>,
    /// When the first job started.
    pub activated_at: Option<String>,
    pub closed_at: Option<String>,
    pub last_job_started: Option<String>,
    pub last_job_completed: Option<String>,
    /// Seconds the session may stay without a running job (corral's idle TTL).
    pub interactive_ttl: Option<i64>,
    /// Seconds the session may live (corral's max TTL).
    pub max_ttl: Option<i64>,
    /// Seconds the session may spend active, as requested (defaults to `max_ttl`).
    pub active_ttl: Option<i64>,
    pub state: JobSessionState,
    /// Why the session is closed (e.g. `drained`, `cancelled`, `idle timeout`).
    pub state_reason: Option<String>,
    pub accepting_jobs: bool,
    pub mode: Mode,
    /// Every state transition, oldest first.
    pub timestamps: Vec<StateTimestamp>,
    /// The tenant that owns the session.
    pub user_id: Option<String>,
    /// Seconds spent running jobs.
    pub elapsed_time: Option<f64>,
}

/// What the view needs of one stored execution.
#[derive(Clone, Debug)]
pub struct JobTimes {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub killed: bool,
}

impl From<&ExecutionTiming> for JobTimes {
    fn from(execution: &ExecutionTiming) -> Self {
        JobTimes {
            started_at: execution.started_at,
            finished_at: execution.finished_at,
            duration_ms: execution.duration_ms,
            killed: execution.status == ExecutionStatus::Killed,
        }
    }
}

/// RFC 3339 with milliseconds and `Z`.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Seconds as this API's `i32`-sized integers.
fn whole_seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs())
        .unwrap_or(i64::MAX)
        .min(i64::from(i32::MAX))
}

/// The session's mode as recorded at creation (`dedicated` for sessions created elsewhere).
fn recorded_mode(record: &SessionRecord) -> Mode {
    record
        .metadata
        .get(METADATA_KEY)
        .and_then(|fields| fields.get("mode"))
        .and_then(|mode| serde_json::from_value(mode.clone()).ok())
        .unwrap_or(Mode::Dedicated)
}

/// The `active_ttl` recorded at creation, if any.
fn recorded_active_ttl(record: &SessionRecord) -> Option<i64> {
    record
        .metadata
        .get(METADATA_KEY)
        .and_then(|fields| fields.get("active_ttl"))
        .and_then(serde_json::Value::as_i64)
}

/// This API's state of a corral session.
pub fn state_of(record: &SessionRecord) -> JobSessionState {
    match record.state {
        SessionState::Closed | SessionState::Dead => JobSessionState::Closed,
        SessionState::Busy => JobSessionState::Active,
        SessionState::Starting | SessionState::Idle if record.execution_count == 0 => {
            JobSessionState::Open
        }
        SessionState::Starting | SessionState::Idle => JobSessionState::Inactive,
    }
}

/// The `JobSession` of `record`, given its stored executions (`jobs`, oldest first).
pub fn job_session(record: &SessionRecord, jobs: &[JobTimes]) -> JobSession {
    let ended = record.state.is_terminal();
    let busy = record.state == SessionState::Busy;
    // The running execution is stored only once it finishes; it started when the session
    // last became active.
    let running_since = busy.then_some(record.last_activity_at);
    let closed_at = ended.then_some(record.last_activity_at);

    let mut timestamps = vec![StateTimestamp {
        status: JobSessionState::Open,
        timestamp: timestamp(record.created_at),
    }];
    for (index, job) in jobs.iter().enumerate() {
        timestamps.push(StateTimestamp {
            status: JobSessionState::Active,
            timestamp: timestamp(job.started_at),
        });
        let cut_short_by_end = ended && job.killed && index + 1 == jobs.len();
        if !cut_short_by_end {
            timestamps.push(StateTimestamp {
                status: JobSessionState::Inactive,
                timestamp: timestamp(job.finished_at),
            });
        }
    }
    if let Some(since) = running_since {
        timestamps.push(StateTimestamp {
            status: JobSessionState::Active,
            timestamp: timestamp(since),
        });
    }
    if let Some(closed_at) = closed_at {
        timestamps.push(StateTimestamp {
            status: JobSessionState::Closed,
            timestamp: timestamp(closed_at),
        });
    }

    let first_started = jobs.first().map(|job| job.started_at).or(running_since);
    let last_started = running_since.or(jobs.last().map(|job| job.started_at));
    let max_ttl = whole_seconds(record.ttl.max);
    let elapsed_ms: u64 = jobs.iter().map(|job| job.duration_ms).sum();
    JobSession {
        id: record.id.to_string(),
        backend_name: Some(record.runtime.clone()),
        started_at: Some(timestamp(record.created_at)),
        activated_at: first_started.map(timestamp),
        closed_at: closed_at.map(timestamp),
        last_job_started: last_started.map(timestamp),
        last_job_completed: jobs.last().map(|job| timestamp(job.finished_at)),
        interactive_ttl: Some(whole_seconds(record.ttl.idle)),
        max_ttl: Some(max_ttl),
        active_ttl: Some(recorded_active_ttl(record).unwrap_or(max_ttl)),
        state: state_of(record),
        state_reason: if ended {
            record.state_reason.clone()
        } else {
            None
        },
        accepting_jobs: record.accepting_executions && !ended,
        mode: recorded_mode(record),
        timestamps,
        user_id: Some(record.tenant.clone()),
        elapsed_time: Some(elapsed_ms as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use corral_core::{SessionId, SessionTtl};
    use std::time::Duration;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, second)
            .single()
            .expect("valid time")
    }

    fn record(state: SessionState, execution_count: u64) -> SessionRecord {
        let mut record = SessionRecord::new(
            SessionId::new(),
            "python3".to_owned(),
            None,
            serde_json::Map::new(),
            SessionTtl {
                idle: Duration::from_secs(60),
                max: Duration::from_secs(600),
            },
            at(0),
        );
        record.state = state;
        record.execution_count = execution_count;
        record
    }

    fn statuses(session: &JobSession) -> Vec<JobSessionState> {
        session
            .timestamps
            .iter()
            .map(|entry| entry.status)
            .collect()
    }

    #[test]
    fn states_follow_the_engine() {
        use JobSessionState::*;
        assert_eq!(state_of(&record(SessionState::Starting, 0)), Open);
        assert_eq!(state_of(&record(SessionState::Idle, 0)), Open);
        assert_eq!(state_of(&record(SessionState::Busy, 1)), Active);
        assert_eq!(state_of(&record(SessionState::Idle, 1)), Inactive);
        assert_eq!(state_of(&record(SessionState::Closed, 0)), Closed);
        assert_eq!(state_of(&record(SessionState::Dead, 3)), Closed);
    }

    #[test]
    fn timestamps_list_every_transition() {
        use JobSessionState::*;
        let job = |start, end, killed| JobTimes {
            started_at: at(start),
            finished_at: at(end),
            duration_ms: u64::from(end - start) * 1000,
            killed,
        };
        let mut busy = record(SessionState::Busy, 2);
        busy.last_activity_at = at(5);
        let session = job_session(&busy, &[job(1, 2, false)]);
        assert_eq!(statuses(&session), [Open, Active, Inactive, Active]);
        assert_eq!(
            session.activated_at.as_deref(),
            Some("2025-01-02T03:04:01.000Z")
        );
        assert_eq!(
            session.last_job_started.as_deref(),
            Some("2025-01-02T03:04:05.000Z")
        );
        assert_eq!(
            session.last_job_completed.as_deref(),
            Some("2025-01-02T03:04:02.000Z")
        );
        assert_eq!(session.closed_at, None);
        assert_eq!(session.elapsed_time, Some(1.0));

        let mut cancelled = record(SessionState::Closed, 2);
        cancelled.last_activity_at = at(9);
        cancelled.state_reason = Some("cancelled".to_owned());
        cancelled.accepting_executions = true;
        let session = job_session(&cancelled, &[job(1, 2, false), job(3, 9, true)]);
        assert_eq!(statuses(&session), [Open, Active, Inactive, Active, Closed]);
        assert_eq!(
            session.closed_at.as_deref(),
            Some("2025-01-02T03:04:09.000Z")
        );
        assert_eq!(session.state_reason.as_deref(), Some("cancelled"));
        assert!(!session.accepting_jobs);

        let fresh = job_session(&record(SessionState::Idle, 0), &[]);
        assert_eq!(statuses(&fresh), [Open]);
        assert_eq!(fresh.activated_at, None);
        assert_eq!(fresh.max_ttl, Some(600));
        assert_eq!(fresh.active_ttl, Some(600));
        assert_eq!(fresh.interactive_ttl, Some(60));
        assert_eq!(fresh.mode, Mode::Dedicated);
        assert_eq!(fresh.backend_name.as_deref(), Some("python3"));
    }
}
