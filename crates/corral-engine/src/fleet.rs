//! Fleets: several nodes sharing one store. Each node registers itself with an id and an
//! address the others reach, renews a lease, owns the sessions it started, and declares
//! lost (once, whoever sees it first) any node whose lease lapsed: that node's live sessions
//! become `dead` (`node lost`) in the store, which also gives back their tenants' quota. A
//! tenant's executions in flight are counted in the store too ([`claim_execution`]), so
//! `max_executions_per_tenant` holds across the fleet.
//!
//! This module decides *where* a session's requests belong ([`Engine::session_route`]) and
//! where a new session should go ([`Engine::placement`]); it does not move requests (HTTP is
//! `corral-api`'s forwarding) and does not run sessions (`session_task`). Without a
//! [`FleetConfig`] the engine is a single node and none of this runs.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use corral_core::{
    NodeLoad, NodeRecord, Principal, SessionId, SessionRecord, SessionState, NODE_LOST_REASON,
};
use corral_store::ClaimedInsert;

use crate::engine::{EngineInner, SessionClaim};
use crate::quotas::QuotaKind;
use crate::{measurements, Engine, EngineError};

/// Default `node_lease_seconds`.
pub const DEFAULT_NODE_LEASE: Duration = Duration::from_secs(15);

/// This node's place in a fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// Unique in the fleet and stable across restarts (e.g. a StatefulSet pod's name).
    pub node_id: String,
    /// Where the other nodes reach this one, e.g. `http://corral-0.corral:8000`.
    pub advertise_url: String,
    /// How long a renewal keeps the node alive; renewed every third of it.
    pub lease: Duration,
}

/// Where a request about one session is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionRoute {
    /// Here: the session runs on this node, or it is not running anywhere (ended, unknown,
    /// or its node is lost), and this node answers from the store.
    Local,
    /// On the node that runs it.
    Owner { node_id: String, url: String },
}

impl Engine {
    /// Every live session the caller may see, in the whole fleet: this node's registry, and
    /// in a fleet also the live sessions the store records for the other nodes (their state
    /// as last stored). In id (creation) order. What the compatibility surfaces list.
    pub async fn fleet_live_sessions(
        &self,
        caller: &Principal,
    ) -> Result<Vec<SessionRecord>, EngineError> {
        let mut sessions = self.live_sessions(caller);
        if self.inner.fleet.is_none() {
            return Ok(sessions);
        }
        for state in SessionState::ALL
            .into_iter()
            .filter(|state| !state.is_terminal())
        {
            let mut after = None;
            loop {
                let page = self.list_sessions(caller, Some(state), after, 1000).await?;
                sessions.extend(page.sessions);
                match page.next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        // This node's own records come first (its registry is the truth for them).
        sessions.sort_by_key(|record| record.id);
        sessions.dedup_by_key(|record| record.id);
        Ok(sessions)
    }

    /// This node's fleet settings; `None` for a single node.
    pub fn fleet(&self) -> Option<&FleetConfig> {
        self.inner.fleet.as_ref()
    }

    /// Which node answers requests about session `id`.
    pub async fn session_route(&self, id: SessionId) -> Result<SessionRoute, EngineError> {
        let Some(fleet) = &self.inner.fleet else {
            return Ok(SessionRoute::Local);
        };
        if self.live(id).is_some() {
            return Ok(SessionRoute::Local);
        }
        let store = &self.inner.store;
        match store.get_session(id).await? {
            Some(record) if !record.state.is_terminal() => {}
            _ => return Ok(SessionRoute::Local),
        }
        let Some(owner) = store.session_owner(id).await? else {
            return Ok(SessionRoute::Local);
        };
        if owner == fleet.node_id {
            return Ok(SessionRoute::Local);
        }
        let nodes = store.list_nodes().await?;
        match nodes.into_iter().find(|node| node.id == owner) {
            Some(node) if node.is_alive(Utc::now()) => Ok(SessionRoute::Owner {
                node_id: node.id,
                url: node.advertise_url,
            }),
            _ => {
                // The owner is gone: settle its sessions now rather than at the next tick, so
                // this answer already says `dead`.
                declare_lapsed(&self.inner).await;
                Ok(SessionRoute::Local)
            }
        }
    }

    /// Every node of the fleet (admin only); a single node lists nothing.
    pub async fn nodes(&self, caller: &Principal) -> Result<Vec<NodeRecord>, EngineError> {
        if !matches!(caller, Principal::Admin) {
            return Err(EngineError::Forbidden(
                "listing nodes needs an admin key".into(),
            ));
        }
        Ok(self.inner.store.list_nodes().await?)
    }

    /// Where a new session should start: `None` for here, or the URL of the least loaded
    /// live node when this one is full or short of memory (and another has room).
    pub async fn placement(&self) -> Result<Option<String>, EngineError> {
        let Some(fleet) = &self.inner.fleet else {
            return Ok(None);
        };
        let limits = &self.inner.limits;
        let full = self.live_count() >= limits.max_sessions;
        let short_of_memory = corral_worker::available_memory_bytes()
            .is_some_and(|available| available < limits.min_available_memory_bytes);
        if !full && !short_of_memory {
            return Ok(None);
        }
        let now = Utc::now();
        let candidate = self
            .inner
            .store
            .list_nodes()
            .await?
            .into_iter()
            .filter(|node| node.id != fleet.node_id && node.is_alive(now))
            .filter(|node| node.load.live_sessions < node.load.max_sessions)
            .filter(|node| {
                node.load
                    .available_memory_bytes
                    .is_none_or(|available| available >= limits.min_available_memory_bytes)
            })
            .min_by_key(|node| (node.load.live_sessions, node.id.clone()));
        Ok(candidate.map(|node| node.advertise_url))
    }
}

/// One of a tenant's executions in flight, counted in the store across the fleet; given back
/// with [`FleetExecution::release`] (or in the background when dropped unreleased).
pub(crate) struct FleetExecution {
    store: Arc<dyn corral_store::Store>,
    node: String,
    tenant: String,
    released: bool,
}

impl FleetExecution {
    pub(crate) async fn release(mut self) {
        self.released = true;
        if let Err(error) = self
            .store
            .release_fleet_execution(&self.node, &self.tenant)
            .await
        {
            tracing::warn!(%error, tenant = %self.tenant, "could not give back an execution's place in the fleet's count");
        }
    }
}

impl Drop for FleetExecution {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (store, node, tenant) = (self.store.clone(), self.node.clone(), self.tenant.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.release_fleet_execution(&node, &tenant).await {
                    tracing::warn!(%error, %tenant, "could not give back an execution's place in the fleet's count");
                }
            });
        }
    }
}

/// In a fleet with `max_executions_per_tenant`, takes one of the tenant's executions in
/// flight across every live node (the store serialises concurrent claims); `None` when
/// there is nothing to count beyond this node's own quota.
pub(crate) async fn claim_execution(
    inner: &EngineInner,
    tenant: &str,
) -> Result<Option<FleetExecution>, EngineError> {
    let (Some(fleet), Some(limit)) = (&inner.fleet, inner.limits.max_executions_per_tenant) else {
        return Ok(None);
    };
    let claimed = inner
        .store
        .claim_fleet_execution(
            &fleet.node_id,
            tenant,
            u64::try_from(limit).unwrap_or(u64::MAX),
        )
        .await?;
    if !claimed {
        measurements::refused("tenant_executions");
        return Err(EngineError::QuotaExceeded {
            kind: QuotaKind::Executions,
            limit,
        });
    }
    Ok(Some(FleetExecution {
        store: inner.store.clone(),
        node: fleet.node_id.clone(),
        tenant: tenant.to_owned(),
        released: false,
    }))
}

/// Records a session this node just started: owned by this node and, in a fleet, counted
/// against its tenant's live sessions across every node (the store serialises concurrent
/// creates, so none are double counted). With a `claim`, nothing is recorded when a live
/// session of the tenant already holds it (on any node): its id is the answer.
pub(crate) async fn record_new_session(
    inner: &EngineInner,
    record: &SessionRecord,
    claim: Option<&SessionClaim>,
) -> Result<Option<SessionId>, EngineError> {
    let owner = inner.fleet.as_ref().map(|fleet| fleet.node_id.as_str());
    // A single node counts its tenants' sessions itself (`quotas`).
    let limit = owner
        .and(inner.limits.max_sessions_per_tenant)
        .map(|limit| u64::try_from(limit).unwrap_or(u64::MAX));
    let stored = match (claim, owner) {
        (Some(claim), owner) => match insert_claimed(inner, record, claim, owner, limit).await? {
            ClaimedInsert::Inserted => true,
            ClaimedInsert::AlreadyClaimed(holder) => return Ok(Some(holder)),
            ClaimedInsert::TenantFull => false,
        },
        (None, None) => {
            inner.store.insert_session(record).await?;
            true
        }
        (None, Some(owner)) => {
            inner
                .store
                .insert_owned_session(record, owner, limit)
                .await?
        }
    };
    if stored {
        return Ok(None);
    }
    measurements::refused("tenant_sessions");
    Err(EngineError::QuotaExceeded {
        kind: QuotaKind::Sessions,
        limit: inner.limits.max_sessions_per_tenant.unwrap_or_default(),
    })
}

/// Inserts `record` holding `claim`. A holder whose metadata no longer carries the claim
/// (a client moved it, e.g. a Jupyter session's path changed) holds it no more: its claim is
/// let go and the insert tried again.
async fn insert_claimed(
    inner: &EngineInner,
    record: &SessionRecord,
    claim: &SessionClaim,
    owner: Option<&str>,
    limit: Option<u64>,
) -> Result<ClaimedInsert, EngineError> {
    let key = claim.key();
    let store = &inner.store;
    let outcome = store
        .insert_claimed_session(record, &key, owner, limit)
        .await?;
    let ClaimedInsert::AlreadyClaimed(holder) = outcome else {
        return Ok(outcome);
    };
    let still_held = store
        .get_session(holder)
        .await?
        .is_some_and(|stored| claim.is_held_by(&stored));
    if still_held {
        return Ok(outcome);
    }
    store.release_claim(holder, &key).await?;
    Ok(store
        .insert_claimed_session(record, &key, owner, limit)
        .await?)
}

/// At start-up: this node's sessions that the store still shows live belong to its previous
/// run (only this node's: the others' are theirs). Returns how many were marked.
pub(crate) async fn mark_previous_run_dead(
    inner: &EngineInner,
    reason: &str,
) -> Result<u64, EngineError> {
    let now = Utc::now();
    Ok(match &inner.fleet {
        Some(fleet) => {
            inner
                .store
                .mark_node_sessions_dead(&fleet.node_id, reason, now)
                .await?
        }
        None => inner.store.mark_live_sessions_dead(reason, now).await?,
    })
}

/// Registers this node and starts renewing its lease and watching the others'.
pub(crate) async fn join(inner: &Arc<EngineInner>) -> Result<(), EngineError> {
    let Some(fleet) = &inner.fleet else {
        return Ok(());
    };
    register(inner, fleet).await?;
    tokio::spawn(run_leases(Arc::downgrade(inner), fleet.lease));
    Ok(())
}

fn load(inner: &Arc<EngineInner>) -> NodeLoad {
    let engine = Engine::from_inner(inner.clone());
    let gauges = engine.live_gauges();
    NodeLoad {
        live_sessions: u64::try_from(engine.live_count()).unwrap_or(u64::MAX),
        max_sessions: u64::try_from(inner.limits.max_sessions).unwrap_or(u64::MAX),
        available_memory_bytes: corral_worker::available_memory_bytes(),
        worker_memory_bytes: gauges.worker_memory_bytes,
    }
}

async fn register(inner: &Arc<EngineInner>, fleet: &FleetConfig) -> Result<(), EngineError> {
    let now = Utc::now();
    inner
        .store
        .register_node(&NodeRecord {
            id: fleet.node_id.clone(),
            advertise_url: fleet.advertise_url.clone(),
            started_at: now,
            renewed_at: now,
            lease_expires_at: now + lease_span(fleet.lease),
            lost_at: None,
            load: load(inner),
        })
        .await?;
    Ok(())
}

fn lease_span(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(15))
}

/// Every third of a lease: renew ours, then settle any node whose lease lapsed. Ends with
/// the engine.
async fn run_leases(inner: Weak<EngineInner>, lease: Duration) {
    let period = (lease / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(fleet) = inner.fleet.clone() else {
            return;
        };
        if inner.drain.is_closed() {
            return;
        }
        renew(&inner, &fleet).await;
        declare_lapsed(&inner).await;
    }
}

async fn renew(inner: &Arc<EngineInner>, fleet: &FleetConfig) {
    let now = Utc::now();
    let renewed = inner
        .store
        .renew_node_lease(
            &fleet.node_id,
            now,
            now + lease_span(fleet.lease),
            &load(inner),
        )
        .await;
    match renewed {
        Ok(true) => {}
        Ok(false) => {
            // Another node declared us lost (we could not renew in time): our sessions are
            // dead in the store and stay so. End their workers here too, then rejoin.
            tracing::warn!(
                node_id = %fleet.node_id,
                "this node's lease lapsed and it was declared lost; its sessions are dead"
            );
            abandon_live_sessions(inner).await;
            if let Err(error) = register(inner, fleet).await {
                tracing::warn!(%error, "could not register this node again");
            }
        }
        Err(error) => tracing::warn!(%error, "could not renew this node's lease"),
    }
}

async fn declare_lapsed(inner: &Arc<EngineInner>) {
    match inner
        .store
        .declare_lapsed_nodes_lost(Utc::now(), NODE_LOST_REASON)
        .await
    {
        Ok(lost) => {
            for (node_id, sessions) in lost {
                tracing::warn!(%node_id, sessions, "node lost: its lease lapsed; its live sessions are dead");
            }
        }
        Err(error) => tracing::warn!(%error, "could not check the other nodes' leases"),
    }
}

/// Ends every session running here (the store keeps them `dead`/`node lost`: ended
/// sessions are final).
async fn abandon_live_sessions(inner: &Arc<EngineInner>) {
    let engine = Engine::from_inner(inner.clone());
    for record in engine.live_sessions(&Principal::Admin) {
        if let Err(error) = engine
            .close_session(&Principal::Admin, record.id, NODE_LOST_REASON)
            .await
        {
            tracing::warn!(session_id = %record.id, %error, "could not end a session of a lost node");
        }
    }
}
