//! Sessions: identity, lifecycle states, time-to-live rules and the record the engine keeps
//! for each session.
//!
//! The state machine and the expiry rules live here so every crate agrees on which moves are
//! legal and when a session has outlived its TTLs; who performs the moves (the engine, its
//! reaper) and where they are stored (the store) are not this module's concern.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ResourceLimits;

/// A session's identity: a UUID (v7, so ids sort by creation time), shown hyphenated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        SessionId(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for SessionId {
    fn from(uuid: Uuid) -> Self {
        SessionId(uuid)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The text given is not a UUID.
#[derive(Debug, thiserror::Error)]
#[error("not a session id (expected a UUID): {0:?}")]
pub struct ParseSessionIdError(pub String);

impl FromStr for SessionId {
    type Err = ParseSessionIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text)
            .map(SessionId)
            .map_err(|_| ParseSessionIdError(text.to_owned()))
    }
}

/// Where a session is in its life.
///
/// ```text
/// starting → idle ⇄ busy → closed
///  ↑  └────────┴──────┴──→ dead (worker gone; reason recorded)
///  └─────────────────────────┘ revived: a restart gives a dead session a fresh worker
/// ```
///
/// `closed` is final; `dead` is final unless a client restarts the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Starting,
    Idle,
    Busy,
    Closed,
    Dead,
}

impl SessionState {
    pub const ALL: [SessionState; 5] = [
        SessionState::Starting,
        SessionState::Idle,
        SessionState::Busy,
        SessionState::Closed,
        SessionState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Idle => "idle",
            SessionState::Busy => "busy",
            SessionState::Closed => "closed",
            SessionState::Dead => "dead",
        }
    }

    /// Closed and dead sessions have no worker: they run nothing (until a dead one is
    /// restarted).
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionState::Closed | SessionState::Dead)
    }

    /// Whether moving from `self` to `next` is a legal step of the lifecycle.
    pub fn can_become(self, next: SessionState) -> bool {
        use SessionState::*;
        match (self, next) {
            // A restart revives a dead session; nothing else moves an ended one.
            (Dead, Starting) => true,
            (Closed, _) | (Dead, _) => false,
            (_, Closed) | (_, Dead) => true,
            (Starting, Idle) => true,
            (Idle, Busy) | (Busy, Idle) => true,
            // A restart passes through `starting` again.
            (Idle, Starting) | (Busy, Starting) => true,
            _ => false,
        }
    }

    /// Checked transition: the new state, or why it is not allowed.
    pub fn transition(self, next: SessionState) -> Result<SessionState, InvalidTransition> {
        if self.can_become(next) {
            Ok(next)
        } else {
            Err(InvalidTransition {
                from: self,
                to: next,
            })
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text given names no session state.
#[derive(Debug, thiserror::Error)]
#[error("unknown session state {0:?} (expected one of starting, idle, busy, closed, dead)")]
pub struct ParseSessionStateError(pub String);

impl FromStr for SessionState {
    type Err = ParseSessionStateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| ParseSessionStateError(text.to_owned()))
    }
}

/// A lifecycle step that is not allowed, e.g. `closed → busy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} session cannot become {to}")]
pub struct InvalidTransition {
    pub from: SessionState,
    pub to: SessionState,
}

/// How long a session may live: closed after `idle` without activity (an execution or a
/// refresh), and after `max` since it was created whatever it is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTtl {
    pub idle: Duration,
    pub max: Duration,
}

/// Which TTL ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Idle longer than its idle TTL.
    IdleTimeout,
    /// Older than its max TTL.
    MaxLifetime,
}

impl Expiry {
    /// The reason recorded on the closed session.
    pub const fn reason(self) -> &'static str {
        match self {
            Expiry::IdleTimeout => "idle timeout",
            Expiry::MaxLifetime => "max lifetime",
        }
    }
}

/// `start + span`, saturating at the latest representable time.
fn deadline(start: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| start.checked_add_signed(span))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Everything the engine knows about one session, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub name: Option<String>,
    /// Runtime name, e.g. `python3`.
    pub runtime: String,
    pub state: SessionState,
    /// Why the session is in its state, for `closed` and `dead` (e.g. `server restarted`).
    pub state_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    /// Number of executions started in this session (the last one's `execution_count`).
    pub execution_count: u64,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `false` drains the session: queued work finishes, new work is refused.
    pub accepting_executions: bool,
    /// The sandbox limits the session runs with.
    #[serde(default)]
    pub resources: ResourceLimits,
    /// Where the session may connect (`none`: its own loopback only).
    #[serde(default)]
    pub network: crate::NetworkPolicy,
    /// `(session-side port, server listener port)` of the session's name proxy, fixed at
    /// creation (its rules point there; a restarted server listens on the same ports).
    #[serde(default)]
    pub egress_ports: Vec<(u16, u16)>,
    pub ttl: SessionTtl,
    /// The tenant the session belongs to; only its keys (and admin keys) can reach it.
    pub tenant: String,
}

impl SessionRecord {
    /// A record for a session that is about to start.
    pub fn new(
        id: SessionId,
        runtime: String,
        name: Option<String>,
        metadata: serde_json::Map<String, serde_json::Value>,
        ttl: SessionTtl,
        now: DateTime<Utc>,
    ) -> Self {
        SessionRecord {
            id,
            name,
            runtime,
            state: SessionState::Starting,
            state_reason: None,
            created_at: now,
            last_activity_at: now,
            execution_count: 0,
            metadata,
            accepting_executions: true,
            resources: ResourceLimits::default(),
            network: crate::NetworkPolicy::None,
            egress_ports: Vec::new(),
            ttl,
            tenant: crate::DEFAULT_TENANT.to_owned(),
        }
    }

    /// When the idle TTL runs out if nothing happens before then.
    pub fn idle_deadline(&self) -> DateTime<Utc> {
        deadline(self.last_activity_at, self.ttl.idle)
    }

    /// When the max TTL runs out.
    pub fn max_deadline(&self) -> DateTime<Utc> {
        deadline(self.created_at, self.ttl.max)
    }

    /// When a live session will be closed if nothing happens; `None` once it has ended.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        (!self.state.is_terminal()).then(|| self.idle_deadline().min(self.max_deadline()))
    }

    /// Whether a TTL has run out at `now`. The max TTL applies in every live state; the idle
    /// TTL only while the session is idle (a running execution is activity).
    pub fn expiry(&self, now: DateTime<Utc>) -> Option<Expiry> {
        if self.state.is_terminal() {
            None
        } else if now >= self.max_deadline() {
            Some(Expiry::MaxLifetime)
        } else if self.state == SessionState::Idle && now >= self.idle_deadline() {
            Some(Expiry::IdleTimeout)
        } else {
            None
        }
    }

    /// The earliest moment [`SessionRecord::expiry`] could become `Some`, seen from `now`: for
    /// a busy session the idle TTL can only start counting once it finishes, so no earlier
    /// than `now + idle`.
    pub fn next_expiry_check(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.state.is_terminal() {
            return None;
        }
        let idle = if self.state == SessionState::Idle {
            self.idle_deadline()
        } else {
            deadline(now, self.ttl.idle).max(self.idle_deadline())
        };
        Some(idle.min(self.max_deadline()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_is_final_and_dead_only_restarts() {
        for to in SessionState::ALL {
            assert!(
                SessionState::Closed.transition(to).is_err(),
                "closed -> {to}"
            );
            assert_eq!(
                SessionState::Dead.can_become(to),
                to == SessionState::Starting,
                "dead -> {to}"
            );
        }
    }

    #[test]
    fn live_states_can_always_close_or_die() {
        for from in [
            SessionState::Starting,
            SessionState::Idle,
            SessionState::Busy,
        ] {
            assert!(from.can_become(SessionState::Closed));
            assert!(from.can_become(SessionState::Dead));
        }
    }

    #[test]
    fn starting_cannot_run_code() {
        assert!(!SessionState::Starting.can_become(SessionState::Busy));
        assert!(SessionState::Starting.can_become(SessionState::Idle));
    }

    #[test]
    fn state_names_round_trip() {
        for state in SessionState::ALL {
            assert_eq!(state.as_str().parse::<SessionState>().ok(), Some(state));
        }
        assert!("sleeping".parse::<SessionState>().is_err());
    }

    fn record(idle: u64, max: u64) -> (SessionRecord, DateTime<Utc>) {
        let now = Utc::now();
        let ttl = SessionTtl {
            idle: Duration::from_secs(idle),
            max: Duration::from_secs(max),
        };
        let mut record = SessionRecord::new(
            SessionId::new(),
            "python3".into(),
            None,
            Default::default(),
            ttl,
            now,
        );
        record.state = SessionState::Idle;
        (record, now)
    }

    #[test]
    fn idle_sessions_expire_after_their_idle_ttl() {
        let (record, now) = record(10, 100);
        assert_eq!(record.expiry(now), None);
        assert_eq!(
            record.expires_at(),
            Some(now + chrono::Duration::seconds(10))
        );
        assert_eq!(
            record.expiry(now + chrono::Duration::seconds(10)),
            Some(Expiry::IdleTimeout)
        );
    }

    #[test]
    fn busy_sessions_expire_only_at_their_max_ttl() {
        let (mut record, now) = record(10, 100);
        record.state = SessionState::Busy;
        assert_eq!(record.expiry(now + chrono::Duration::seconds(50)), None);
        assert_eq!(
            record.next_expiry_check(now + chrono::Duration::seconds(50)),
            Some(now + chrono::Duration::seconds(60))
        );
        assert_eq!(
            record.expiry(now + chrono::Duration::seconds(100)),
            Some(Expiry::MaxLifetime)
        );
    }

    #[test]
    fn ended_sessions_never_expire_and_huge_ttls_saturate() {
        let (mut record, now) = record(u64::MAX / 4, u64::MAX / 4);
        assert_eq!(record.expires_at(), Some(DateTime::<Utc>::MAX_UTC));
        record.state = SessionState::Closed;
        assert_eq!(record.expires_at(), None);
        assert_eq!(record.expiry(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(record.next_expiry_check(now), None);
    }

    #[test]
    fn session_ids_parse_only_uuids() {
        let id = SessionId::new();
        assert_eq!(id.to_string().parse::<SessionId>().ok(), Some(id));
        assert!("nope".parse::<SessionId>().is_err());
    }
}
