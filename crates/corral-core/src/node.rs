//! Nodes of a fleet: what each corral node sharing one store records about itself, and the
//! lease rule that decides whether it is still alive.
//!
//! Who renews leases and who declares a node lost is the engine's `fleet` module; where the
//! records live is the store. This module only names the data and the rule.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Reason recorded for the live sessions of a node whose lease lapsed.
pub const NODE_LOST_REASON: &str = "node lost";

/// Longest node id accepted.
pub const MAX_NODE_ID_CHARS: usize = 128;

/// One node as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    /// Where the other nodes reach this one (`http://host:port`).
    pub advertise_url: String,
    pub started_at: DateTime<Utc>,
    /// When the lease was last renewed.
    pub renewed_at: DateTime<Utc>,
    /// The node is alive until then; after it another node may declare it lost.
    pub lease_expires_at: DateTime<Utc>,
    /// When another node declared this one lost (its live sessions became `dead`); cleared
    /// when the node registers again.
    pub lost_at: Option<DateTime<Utc>>,
    /// The node's load at its last renewal.
    pub load: NodeLoad,
}

/// What a node reports with each renewal, for placement and `corral nodes list`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub live_sessions: u64,
    /// The node's own cap on live sessions.
    pub max_sessions: u64,
    /// Memory the host had available, if it could tell.
    pub available_memory_bytes: Option<u64>,
    /// Memory the node's workers used.
    pub worker_memory_bytes: u64,
}

impl NodeRecord {
    /// Whether the node holds its lease at `now` (and has not been declared lost).
    pub fn is_alive(&self, now: DateTime<Utc>) -> bool {
        self.lost_at.is_none() && self.lease_expires_at > now
    }
}

/// Whether `id` may name a node: 1 to [`MAX_NODE_ID_CHARS`] of ASCII letters, digits, `.`,
/// `-` and `_` (a host name or a Kubernetes pod name fits).
pub fn is_valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_CHARS
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_alive_while_it_holds_its_lease_and_was_not_declared_lost() {
        let now = Utc::now();
        let mut node = NodeRecord {
            id: "a".into(),
            advertise_url: "http://127.0.0.1:1".into(),
            started_at: now,
            renewed_at: now,
            lease_expires_at: now + chrono::Duration::seconds(1),
            lost_at: None,
            load: NodeLoad::default(),
        };
        assert!(node.is_alive(now));
        assert!(!node.is_alive(now + chrono::Duration::seconds(1)));
        node.lost_at = Some(now);
        assert!(!node.is_alive(now));
    }

    #[test]
    fn node_ids_are_short_host_like_names() {
        assert!(is_valid_node_id("corral-0.corral.default.svc"));
        assert!(is_valid_node_id("node_1"));
        assert!(!is_valid_node_id(""));
        assert!(!is_valid_node_id("a b"));
        assert!(!is_valid_node_id(&"a".repeat(MAX_NODE_ID_CHARS + 1)));
    }
}
