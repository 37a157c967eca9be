//! The store suite: every test runs against SQLite (a temporary directory) and PostgreSQL
//! (a fresh database on the server `CORRAL_TEST_DATABASE_URL` names; `scripts/test` runs a
//! private one). Without that variable the PostgreSQL half says so and passes; with it, a
//! server that cannot be reached fails the test.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use corral_core::{
    ApiKeyRecord, ExecutionRecord, ExecutionStatus, KeyScope, NodeLoad, NodeRecord, OutputItem,
    SessionId, SessionRecord, SessionState, SessionTtl, NODE_LOST_REASON,
};
use corral_store::{
    ClaimedInsert, ExecutionWrite, GroupCommit, PostgresStore, SessionQuery, SqliteStore, Store,
};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One store under test and how to open it again.
struct TestStore {
    store: Arc<dyn Store>,
    backend: Backend,
    directory: tempfile::TempDir,
    url: Option<String>,
}

impl TestStore {
    /// `None` (after saying why) when PostgreSQL was not provided.
    async fn new(backend: Backend) -> Option<TestStore> {
        let directory = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => Some(TestStore {
                store: Arc::new(SqliteStore::open(directory.path()).await.expect("open")),
                backend,
                directory,
                url: None,
            }),
            Backend::Postgres => {
                let Ok(server) = std::env::var("CORRAL_TEST_DATABASE_URL") else {
                    eprintln!(
                        "skipping the PostgreSQL run: CORRAL_TEST_DATABASE_URL is not set \
                         (scripts/test sets it)"
                    );
                    return None;
                };
                let url = corral_store::scratch_database(&server)
                    .await
                    .expect("creating a database on CORRAL_TEST_DATABASE_URL's server");
                Some(TestStore {
                    store: Arc::new(PostgresStore::connect(&url).await.expect("connect")),
                    backend,
                    directory,
                    url: Some(url),
                })
            }
        }
    }

    async fn reopen(&mut self) {
        self.store.close().await;
        self.store = match self.backend {
            Backend::Sqlite => Arc::new(
                SqliteStore::open(self.directory.path())
                    .await
                    .expect("reopen"),
            ),
            Backend::Postgres => Arc::new(
                PostgresStore::connect(self.url.as_deref().expect("url"))
                    .await
                    .expect("reconnect"),
            ),
        };
    }
}

/// Now, at the microsecond (PostgreSQL's precision).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn session(now: DateTime<Utc>) -> SessionRecord {
    let mut metadata = serde_json::Map::new();
    metadata.insert("owner".into(), serde_json::json!("tests"));
    let mut record = SessionRecord::new(
        SessionId::new(),
        "python3".into(),
        Some("one".into()),
        metadata,
        SessionTtl {
            idle: Duration::from_secs(60),
            max: Duration::from_millis(3_600_500),
        },
        now,
    );
    record.network =
        corral_core::NetworkPolicy::allow(&["10.0.0.0/8", "pypi.org", "host.corral.internal:8080"])
            .expect("policy");
    record.egress_ports = vec![(80, 40001), (443, 40002)];
    record
}

fn execution(record: &SessionRecord, count: u64, now: DateTime<Utc>) -> ExecutionRecord {
    ExecutionRecord {
        session_id: record.id,
        execution_count: count,
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
    }
}

fn node(id: &str, now: DateTime<Utc>, lease: chrono::Duration) -> NodeRecord {
    NodeRecord {
        id: id.into(),
        advertise_url: format!("http://{id}.test:8000"),
        started_at: now,
        renewed_at: now,
        lease_expires_at: now + lease,
        lost_at: None,
        load: NodeLoad {
            live_sessions: 0,
            max_sessions: 10,
            available_memory_bytes: Some(1 << 30),
            worker_memory_bytes: 0,
        },
    }
}

fn key(id: &str, tenant: Option<&str>) -> ApiKeyRecord {
    ApiKeyRecord {
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
        created_at: now(),
        revoked_at: None,
    }
}

async fn sessions_and_executions_survive_reopening(mut test: TestStore) {
    let now = now();
    let mut record = session(now);
    test.store.insert_session(&record).await.expect("insert");
    record.state = SessionState::Idle;
    record.execution_count = 1;
    test.store
        .record_execution(&execution(&record, 1, now), &record, 1000)
        .await
        .expect("record");
    test.reopen().await;
    let store = &test.store;
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
    assert_eq!(back.created_at, record.created_at);
    assert_eq!(back.network, record.network);
    assert_eq!(back.egress_ports, record.egress_ports);
    let stored = store
        .get_execution(record.id, 1)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(stored, execution(&record, 1, now));
    assert_eq!(
        store
            .list_executions(record.id, None, 10)
            .await
            .expect("list")
            .len(),
        1
    );
    let timings = store
        .list_execution_timings(record.id)
        .await
        .expect("timings");
    assert_eq!(timings.len(), 1);
    assert_eq!(timings[0].duration_ms, 3);

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

async fn history_beyond_the_kept_executions_is_removed(test: TestStore) {
    let store = &test.store;
    let now = now();
    let mut record = session(now);
    store.insert_session(&record).await.expect("insert");
    for count in 1..=5 {
        record.execution_count = count;
        store
            .record_execution(&execution(&record, count, now), &record, 2)
            .await
            .expect("record");
    }
    let kept: Vec<u64> = store
        .list_executions(record.id, None, 10)
        .await
        .expect("list")
        .iter()
        .map(|execution| execution.execution_count)
        .collect();
    assert_eq!(kept, [4, 5]);
    let after: Vec<u64> = store
        .list_executions(record.id, Some(4), 10)
        .await
        .expect("list")
        .iter()
        .map(|execution| execution.execution_count)
        .collect();
    assert_eq!(after, [5]);
}

async fn listing_pages_by_id_and_filters_by_state_and_tenant(test: TestStore) {
    let store = &test.store;
    let now = now();
    let mut ids = Vec::new();
    for index in 0..5 {
        let mut record = session(now);
        if index % 2 == 0 {
            record.state = SessionState::Closed;
        }
        if index == 4 {
            record.tenant = "other".into();
        }
        store.insert_session(&record).await.expect("insert");
        ids.push(record.id);
    }
    let query = |state, tenant: Option<&str>, after, limit| SessionQuery {
        state,
        tenant: tenant.map(str::to_owned),
        after,
        limit,
    };
    let first = store
        .list_sessions(&query(None, None, None, 2))
        .await
        .expect("list");
    assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..2]);
    let rest = store
        .list_sessions(&query(None, None, Some(ids[1]), 10))
        .await
        .expect("list");
    assert_eq!(rest.iter().map(|s| s.id).collect::<Vec<_>>(), ids[2..]);
    let closed = store
        .list_sessions(&query(Some(SessionState::Closed), None, None, 10))
        .await
        .expect("list");
    assert_eq!(closed.len(), 3);
    let other = store
        .list_sessions(&query(None, Some("other"), None, 10))
        .await
        .expect("list");
    assert_eq!(other.iter().map(|s| s.id).collect::<Vec<_>>(), ids[4..]);
}

async fn an_ended_session_stays_ended(test: TestStore) {
    let store = &test.store;
    let now = now();
    let mut record = session(now);
    store.insert_session(&record).await.expect("insert");
    record.state = SessionState::Dead;
    record.state_reason = Some(NODE_LOST_REASON.into());
    store.update_session(&record).await.expect("update");
    // A late write from the node that ran it (an execution finishing) does not revive it.
    let mut late = record.clone();
    late.state = SessionState::Idle;
    late.state_reason = None;
    late.execution_count = 1;
    store.update_session(&late).await.expect("update");
    store
        .record_execution(&execution(&late, 1, now), &late, 10)
        .await
        .expect("record");
    let back = store
        .get_session(record.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(back.state, SessionState::Dead);
    assert_eq!(back.state_reason.as_deref(), Some(NODE_LOST_REASON));
}

async fn api_keys_are_stored_listed_by_tenant_and_revoked(test: TestStore) {
    let store = &test.store;
    assert!(!store.has_active_api_keys().await.expect("query"));
    for (id, tenant) in [("a1", Some("a")), ("a2", Some("a")), ("b1", Some("b"))] {
        store
            .insert_api_key(&key(id, tenant))
            .await
            .expect("insert");
    }
    store
        .insert_api_key(&key("root", None))
        .await
        .expect("insert");
    assert!(store.has_active_api_keys().await.expect("query"));
    assert_eq!(store.list_api_keys(None).await.expect("list").len(), 4);
    let only_a = store.list_api_keys(Some("a")).await.expect("list");
    assert_eq!(
        only_a.iter().map(|key| key.id.as_str()).collect::<Vec<_>>(),
        ["a1", "a2"]
    );
    assert_eq!(
        only_a[0],
        key("a1", Some("a")).with_created_at(only_a[0].created_at)
    );
    assert!(store.revoke_api_key("a1", now()).await.expect("revoke"));
    assert!(!store.revoke_api_key("a1", now()).await.expect("again"));
    assert!(!store.revoke_api_key("nope", now()).await.expect("unknown"));
    let revoked = store
        .get_api_key("a1")
        .await
        .expect("get")
        .expect("present");
    assert!(revoked.revoked_at.is_some());
    for id in ["a2", "b1", "root"] {
        store.revoke_api_key(id, now()).await.expect("revoke");
    }
    assert!(!store.has_active_api_keys().await.expect("query"));

    // A session key reaches one session: it does not end open mode.
    let record = session(now());
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
    assert_eq!(
        store
            .get_api_key("s1")
            .await
            .expect("get")
            .expect("present")
            .session_id,
        Some(record.id)
    );
    // Retention takes the session's keys with it.
    let mut ended = record.clone();
    ended.state = SessionState::Closed;
    store.update_session(&ended).await.expect("close");
    store
        .remove_ended_sessions(now() + chrono::Duration::seconds(1))
        .await
        .expect("remove");
    assert!(store.get_api_key("s1").await.expect("get").is_none());
}

trait WithCreatedAt {
    fn with_created_at(self, at: DateTime<Utc>) -> Self;
}

impl WithCreatedAt for ApiKeyRecord {
    fn with_created_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = at;
        self
    }
}

async fn a_tenants_live_session_limit_holds_under_concurrent_inserts(test: TestStore) {
    let store = test.store.clone();
    let now = now();
    let attempts = (0..16).map(|index| {
        let store = store.clone();
        let mut record = session(now);
        record.tenant = "busy".into();
        let owner = format!("node-{}", index % 3);
        tokio::spawn(async move {
            store
                .insert_owned_session(&record, &owner, Some(3))
                .await
                .expect("insert")
        })
    });
    let mut stored = 0;
    for attempt in attempts {
        if attempt.await.expect("task") {
            stored += 1;
        }
    }
    assert_eq!(stored, 3);
    // Other tenants and unlimited inserts are not affected.
    let other = session(now);
    assert!(store
        .insert_owned_session(&other, "node-0", Some(3))
        .await
        .expect("insert"));
    let mut unlimited = session(now);
    unlimited.tenant = "busy".into();
    assert!(store
        .insert_owned_session(&unlimited, "node-0", None)
        .await
        .expect("insert"));
    assert_eq!(
        store
            .session_owner(other.id)
            .await
            .expect("owner")
            .as_deref(),
        Some("node-0")
    );
    assert_eq!(
        store.session_owner(SessionId::new()).await.expect("owner"),
        None
    );
    // An ended session no longer counts.
    let busy = store
        .list_sessions(&SessionQuery {
            state: None,
            tenant: Some("busy".into()),
            after: None,
            limit: 10,
        })
        .await
        .expect("list");
    let mut ended = busy[0].clone();
    ended.state = SessionState::Closed;
    store.update_session(&ended).await.expect("close");
    let mut another = session(now);
    another.tenant = "busy".into();
    // Four were live (three within the limit, one unlimited); one ended: three remain.
    assert!(!store
        .insert_owned_session(&another, "node-1", Some(3))
        .await
        .expect("insert"));
    assert!(store
        .insert_owned_session(&another, "node-1", Some(4))
        .await
        .expect("insert"));
}

async fn a_claim_is_held_by_one_live_session_of_a_tenant_until_it_ends(mut test: TestStore) {
    let store = test.store.clone();
    let now = now();
    const CLAIM: &str = r#"["jupyter","path","notebook.ipynb"]"#;
    // Concurrent inserts of one claim, as from several nodes: one session is stored and every
    // other insert is told which one.
    let attempts: Vec<_> = (0..12)
        .map(|index| {
            let store = store.clone();
            let mut record = session(now);
            record.tenant = "team".into();
            let owner = format!("node-{}", index % 3);
            tokio::spawn(async move {
                let outcome = store
                    .insert_claimed_session(&record, CLAIM, Some(&owner), Some(100))
                    .await
                    .expect("insert");
                (record.id, outcome)
            })
        })
        .collect();
    let mut inserted = Vec::new();
    let mut told = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("task") {
            (id, ClaimedInsert::Inserted) => inserted.push(id),
            (_, ClaimedInsert::AlreadyClaimed(holder)) => told.push(holder),
            (_, ClaimedInsert::TenantFull) => panic!("the tenant is not full"),
        }
    }
    assert_eq!(inserted.len(), 1, "one session holds the claim");
    let holder = inserted[0];
    assert!(told.iter().all(|id| *id == holder), "{told:?}");
    assert_eq!(told.len(), 11);
    let team_sessions = store
        .list_sessions(&SessionQuery {
            state: None,
            tenant: Some("team".into()),
            after: None,
            limit: 100,
        })
        .await
        .expect("list");
    assert_eq!(team_sessions.len(), 1, "the losers stored nothing");
    assert_eq!(
        store.claimed_session("team", CLAIM).await.expect("claimed"),
        Some(holder)
    );
    // Another tenant, or another claim, is another identity.
    assert_eq!(
        store
            .claimed_session("other", CLAIM)
            .await
            .expect("claimed"),
        None
    );
    let mut elsewhere = session(now);
    elsewhere.tenant = "other".into();
    assert_eq!(
        store
            .insert_claimed_session(&elsewhere, CLAIM, None, None)
            .await
            .expect("insert"),
        ClaimedInsert::Inserted
    );
    let mut second = session(now);
    second.tenant = "team".into();
    assert_eq!(
        store
            .insert_claimed_session(
                &second,
                r#"["agent","identifier","x"]"#,
                Some("node-0"),
                None
            )
            .await
            .expect("insert"),
        ClaimedInsert::Inserted
    );
    // The tenant's limit still holds: two live sessions of `team` now.
    let mut over = session(now);
    over.tenant = "team".into();
    assert_eq!(
        store
            .insert_claimed_session(&over, r#"["agent","identifier","y"]"#, None, Some(2))
            .await
            .expect("insert"),
        ClaimedInsert::TenantFull
    );

    // Once the holder is closed the claim is free again.
    let mut closed = store
        .get_session(holder)
        .await
        .expect("get")
        .expect("stored");
    closed.state = SessionState::Closed;
    closed.state_reason = Some("closed by client".into());
    store.update_session(&closed).await.expect("close");
    assert_eq!(
        store.claimed_session("team", CLAIM).await.expect("claimed"),
        None
    );
    let mut next = session(now);
    next.tenant = "team".into();
    assert_eq!(
        store
            .insert_claimed_session(&next, CLAIM, Some("node-1"), None)
            .await
            .expect("insert"),
        ClaimedInsert::Inserted
    );
    // ... and when its node's sessions die.
    store
        .mark_node_sessions_dead("node-1", NODE_LOST_REASON, now)
        .await
        .expect("mark dead");
    assert_eq!(
        store.claimed_session("team", CLAIM).await.expect("claimed"),
        None
    );
    let mut third = session(now);
    third.tenant = "team".into();
    assert_eq!(
        store
            .insert_claimed_session(&third, CLAIM, Some("node-2"), None)
            .await
            .expect("insert"),
        ClaimedInsert::Inserted
    );
    // A dead session brought back while another holds its claim does not take it back.
    let mut revived = store
        .get_session(next.id)
        .await
        .expect("get")
        .expect("stored");
    revived.state = SessionState::Idle;
    revived.state_reason = None;
    // Its fresh worker's proxy listens on fresh ports, kept for the next adoption.
    revived.egress_ports = vec![(53, 40001), (443, 40002)];
    assert!(store.revive_session(&revived).await.expect("revive"));
    assert_eq!(
        store
            .get_session(next.id)
            .await
            .expect("get")
            .expect("stored")
            .egress_ports,
        vec![(53, 40001), (443, 40002)]
    );
    assert_eq!(
        store.claimed_session("team", CLAIM).await.expect("claimed"),
        Some(third.id)
    );
    // Reopened, the claims are as they were.
    test.reopen().await;
    assert_eq!(
        test.store
            .claimed_session("team", CLAIM)
            .await
            .expect("claimed"),
        Some(third.id)
    );
    // A holder lets go of its claim (a client moved its identity elsewhere).
    test.store
        .release_claim(third.id, CLAIM)
        .await
        .expect("release");
    assert_eq!(
        test.store
            .claimed_session("team", CLAIM)
            .await
            .expect("claimed"),
        None
    );
}

async fn a_claim_moves_between_live_sessions_in_one_step(test: TestStore) {
    let store = &test.store;
    let now = now();
    const OLD: &str = r#"["jupyter","path","old.ipynb"]"#;
    const NEW: &str = r#"["jupyter","path","new.ipynb"]"#;
    let first = session(now);
    assert_eq!(
        store
            .insert_claimed_session(&first, OLD, Some("node-0"), None)
            .await
            .expect("insert"),
        ClaimedInsert::Inserted
    );
    let second = session(now);
    store
        .insert_owned_session(&second, "node-1", None)
        .await
        .expect("insert");
    let tenant = first.tenant.as_str();
    // Held by another live session: refused, nothing changes.
    assert_eq!(
        store.hold_claim(second.id, OLD, None).await.expect("hold"),
        Some(first.id)
    );
    assert_eq!(
        store.claimed_session(tenant, OLD).await.expect("claimed"),
        Some(first.id)
    );
    // Taken from its holder.
    assert_eq!(
        store
            .hold_claim(second.id, OLD, Some(first.id))
            .await
            .expect("hold"),
        None
    );
    assert_eq!(
        store.claimed_session(tenant, OLD).await.expect("claimed"),
        Some(second.id)
    );
    // A session holds one claim: holding another gives the first back.
    assert_eq!(
        store.hold_claim(second.id, NEW, None).await.expect("hold"),
        None
    );
    assert_eq!(
        store.claimed_session(tenant, OLD).await.expect("claimed"),
        None
    );
    assert_eq!(
        store.claimed_session(tenant, NEW).await.expect("claimed"),
        Some(second.id)
    );
    // An ended session holds nothing.
    let mut ended = first.clone();
    ended.state = SessionState::Closed;
    store.update_session(&ended).await.expect("close");
    assert_eq!(
        store.hold_claim(first.id, OLD, None).await.expect("hold"),
        None
    );
    assert_eq!(
        store.claimed_session(tenant, OLD).await.expect("claimed"),
        None
    );
    assert_eq!(
        store
            .hold_claim(SessionId::new(), OLD, None)
            .await
            .expect("hold"),
        None
    );
}

async fn a_lapsed_node_is_declared_lost_once_and_its_sessions_die(test: TestStore) {
    let store = test.store.clone();
    let start = now();
    let lease = chrono::Duration::seconds(10);
    store
        .register_node(&node("a", start, lease))
        .await
        .expect("register");
    store
        .register_node(&node("b", start, lease))
        .await
        .expect("register");
    let mut of_a = Vec::new();
    for _ in 0..3 {
        let mut record = session(start);
        record.tenant = "t".into();
        store
            .insert_owned_session(&record, "a", Some(3))
            .await
            .expect("insert");
        of_a.push(record.id);
    }
    let mut closed = session(start);
    store
        .insert_owned_session(&closed, "a", None)
        .await
        .expect("insert");
    closed.state = SessionState::Closed;
    closed.state_reason = Some("closed by client".into());
    store.update_session(&closed).await.expect("close");
    let of_b = session(start);
    store
        .insert_owned_session(&of_b, "b", None)
        .await
        .expect("insert");

    // Within the lease nothing happens; b renews, a does not.
    assert!(store
        .declare_lapsed_nodes_lost(start, NODE_LOST_REASON)
        .await
        .expect("declare")
        .is_empty());
    let later = start + chrono::Duration::seconds(11);
    assert!(store
        .renew_node_lease("b", later, later + lease, &NodeLoad::default())
        .await
        .expect("renew"));
    // Racing nodes: exactly one declares a lost.
    let racers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .declare_lapsed_nodes_lost(later, NODE_LOST_REASON)
                .await
                .expect("declare")
        })
    });
    let mut declared = Vec::new();
    for racer in racers {
        declared.extend(racer.await.expect("task"));
    }
    assert_eq!(declared, [("a".to_owned(), 3)]);
    for id in &of_a {
        let record = store.get_session(*id).await.expect("get").expect("present");
        assert_eq!(record.state, SessionState::Dead);
        assert_eq!(record.state_reason.as_deref(), Some(NODE_LOST_REASON));
    }
    let closed_back = store
        .get_session(closed.id)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        closed_back.state_reason.as_deref(),
        Some("closed by client")
    );
    assert_eq!(
        store
            .get_session(of_b.id)
            .await
            .expect("get")
            .expect("present")
            .state,
        SessionState::Starting
    );
    // The tenant's quota was released with them.
    let mut fresh = session(later);
    fresh.tenant = "t".into();
    assert!(store
        .insert_owned_session(&fresh, "b", Some(1))
        .await
        .expect("insert"));

    // a cannot renew a lost lease; registering again does not revive its sessions.
    assert!(!store
        .renew_node_lease("a", later, later + lease, &NodeLoad::default())
        .await
        .expect("renew"));
    let nodes = store.list_nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].lost_at, Some(later));
    assert!(!nodes[0].is_alive(later));
    assert!(nodes[1].is_alive(later));
    store
        .register_node(&node("a", later, lease))
        .await
        .expect("register again");
    let again = store.list_nodes().await.expect("nodes");
    assert_eq!(again[0], node("a", later, lease));
    assert!(store
        .renew_node_lease("a", later, later + lease, &NodeLoad::default())
        .await
        .expect("renew"));
    let record = store
        .get_session(of_a[0])
        .await
        .expect("get")
        .expect("present");
    assert_eq!(record.state, SessionState::Dead);
    // A restarting node marks only its own live sessions dead.
    assert_eq!(
        store
            .mark_node_sessions_dead("a", "server restarted", later)
            .await
            .expect("mark"),
        0
    );
    assert_eq!(
        store
            .mark_node_sessions_dead("b", "server restarted", later)
            .await
            .expect("mark"),
        2
    );
}

fn write(record: &SessionRecord, count: u64, now: DateTime<Utc>, keep_last: u64) -> ExecutionWrite {
    let mut session = record.clone();
    session.execution_count = count;
    ExecutionWrite {
        execution: execution(record, count, now),
        session,
        keep_last,
    }
}

async fn stored_counts(store: &Arc<dyn Store>, id: SessionId) -> Vec<u64> {
    store
        .list_executions(id, None, 100)
        .await
        .expect("list")
        .iter()
        .map(|execution| execution.execution_count)
        .collect()
}

async fn a_batch_of_executions_is_recorded_whole_or_not_at_all(test: TestStore) {
    let store = &test.store;
    let now = now();
    let (one, two) = (session(now), session(now));
    store.insert_session(&one).await.expect("insert");
    store.insert_session(&two).await.expect("insert");
    let batch = [
        write(&one, 1, now, 2),
        write(&two, 1, now, 2),
        write(&one, 2, now, 2),
        write(&one, 3, now, 2),
    ];
    store
        .record_executions(&batch)
        .await
        .expect("record a batch");
    assert_eq!(stored_counts(store, one.id).await, [2, 3]);
    assert_eq!(stored_counts(store, two.id).await, [1]);
    let one_now = store.get_session(one.id).await.expect("get").expect("one");
    assert_eq!(one_now.execution_count, 3);
    // The second write repeats a stored execution: nothing of the batch is kept.
    let failing = [write(&two, 2, now, 10), write(&two, 1, now, 10)];
    assert!(store.record_executions(&failing).await.is_err());
    assert_eq!(stored_counts(store, two.id).await, [1]);
    store.record_executions(&[]).await.expect("an empty batch");
}

async fn the_group_commit_answers_once_stored_and_fails_only_a_bad_write(mut test: TestStore) {
    const SESSIONS: usize = 16;
    const EACH: u64 = 25;
    let now = now();
    let commit = GroupCommit::start(test.store.clone());
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let record = session(now);
        test.store.insert_session(&record).await.expect("insert");
        sessions.push(record);
    }
    let tasks: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|record| {
            let commit = commit.clone();
            let store = test.store.clone();
            tokio::spawn(async move {
                for count in 1..=EACH {
                    let written = commit
                        .record(write(&record, count, now, 1000))
                        .await
                        .expect("group commit");
                    assert_eq!(written.execution.execution_count, count);
                    // Answered means stored.
                    let stored = store.get_execution(record.id, count).await.expect("get");
                    assert_eq!(stored.expect("stored").execution_count, count);
                }
                // A write that cannot be stored fails, alone.
                assert!(commit.record(write(&record, 1, now, 1000)).await.is_err());
                commit
                    .record(write(&record, EACH + 1, now, 1000))
                    .await
                    .expect("a write after a failed one");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
    drop(commit);
    test.reopen().await;
    let expected: Vec<u64> = (1..=EACH + 1).collect();
    for record in &sessions {
        assert_eq!(stored_counts(&test.store, record.id).await, expected);
        let stored = test
            .store
            .get_session(record.id)
            .await
            .expect("get")
            .expect("session");
        assert_eq!(stored.execution_count, EACH + 1);
    }
}

/// Each test, once per backend.
macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(store) = super::TestStore::new(super::Backend::Sqlite).await {
                        super::$test(store).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(store) = super::TestStore::new(super::Backend::Postgres).await {
                        super::$test(store).await;
                    }
                }
            )*
        }
    };
}

store_suite!(
    sessions_and_executions_survive_reopening,
    history_beyond_the_kept_executions_is_removed,
    listing_pages_by_id_and_filters_by_state_and_tenant,
    an_ended_session_stays_ended,
    api_keys_are_stored_listed_by_tenant_and_revoked,
    a_tenants_live_session_limit_holds_under_concurrent_inserts,
    a_claim_is_held_by_one_live_session_of_a_tenant_until_it_ends,
    a_claim_moves_between_live_sessions_in_one_step,
    a_lapsed_node_is_declared_lost_once_and_its_sessions_die,
    a_batch_of_executions_is_recorded_whole_or_not_at_all,
    the_group_commit_answers_once_stored_and_fails_only_a_bad_write,
);
