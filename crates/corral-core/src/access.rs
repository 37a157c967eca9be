//! Who may do what: tenants, API key records and scopes, and the principal a request acts as,
//! with the one rule deciding which sessions a principal can see.
//!
//! Issuing, hashing and checking keys is the engine's job (`corral-engine/src/keys.rs`);
//! reading credentials from requests is the API's. Key secrets never appear here, only their
//! hashes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{SessionId, SessionRecord};

/// The tenant sessions belong to when nobody says otherwise (open mode, admin keys).
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant name.
pub const MAX_TENANT_CHARS: usize = 64;

/// Whether `name` is a valid tenant name: 1 to 64 of `a-z`, `0-9`, `-`, `_`, `.`.
pub fn is_valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// What an API key may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Everything: every tenant's sessions and all keys.
    Admin,
    /// One tenant's sessions (and its keys).
    Tenant,
    /// One session of one tenant.
    Session,
}

impl KeyScope {
    pub const ALL: [KeyScope; 3] = [KeyScope::Admin, KeyScope::Tenant, KeyScope::Session];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Admin => "admin",
            KeyScope::Tenant => "tenant",
            KeyScope::Session => "session",
        }
    }

    pub fn parse(text: &str) -> Option<KeyScope> {
        KeyScope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored API key: everything but the secret, which is kept only as a SHA-256 hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public identifier, also the key's prefix (`corral_<id>_<secret>`).
    pub id: String,
    pub name: Option<String>,
    pub scope: KeyScope,
    /// `None` for admin keys.
    pub tenant: Option<String>,
    /// For session-scoped keys.
    pub session_id: Option<SessionId>,
    /// Lowercase hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// After this instant the key authenticates nobody.
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// Who a request presenting this key acts as; `None` once revoked or if inconsistent.
    /// Who the key acts as at `now`: nobody once revoked or expired.
    pub fn principal(&self, now: DateTime<Utc>) -> Option<Principal> {
        if self.revoked_at.is_some() || self.expires_at.is_some_and(|expiry| expiry <= now) {
            return None;
        }
        match (self.scope, &self.tenant, self.session_id) {
            (KeyScope::Admin, _, _) => Some(Principal::Admin),
            (KeyScope::Tenant, Some(tenant), _) => Some(Principal::Tenant(tenant.clone())),
            (KeyScope::Session, Some(tenant), Some(session_id)) => Some(Principal::Session {
                tenant: tenant.clone(),
                session_id,
            }),
            _ => None,
        }
    }
}

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Tenant(String),
    Session {
        tenant: String,
        session_id: SessionId,
    },
}

impl Principal {
    /// Whether this principal may see (and act on) the session.
    pub fn can_access(&self, session: &SessionRecord) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant(tenant) => session.tenant == *tenant,
            Principal::Session { tenant, session_id } => {
                session.tenant == *tenant && session.id == *session_id
            }
        }
    }

    /// The tenant whose sessions and keys this principal sees; `None` for all of them.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Admin => None,
            Principal::Tenant(tenant) | Principal::Session { tenant, .. } => Some(tenant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionTtl;
    use std::time::Duration;

    fn session(tenant: &str) -> SessionRecord {
        let mut record = SessionRecord::new(
            SessionId::new(),
            "python3".into(),
            None,
            Default::default(),
            SessionTtl {
                idle: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            Utc::now(),
        );
        record.tenant = tenant.to_owned();
        record
    }

    #[test]
    fn principals_see_only_their_sessions() {
        let a = session("a");
        let b = session("b");
        assert!(Principal::Admin.can_access(&a) && Principal::Admin.can_access(&b));
        let tenant_a = Principal::Tenant("a".into());
        assert!(tenant_a.can_access(&a) && !tenant_a.can_access(&b));
        let only_a = Principal::Session {
            tenant: "a".into(),
            session_id: a.id,
        };
        assert!(only_a.can_access(&a));
        assert!(!only_a.can_access(&session("a")));
    }

    #[test]
    fn tenant_names_are_checked() {
        assert!(is_valid_tenant("acme-1.prod_x"));
        for bad in ["", "Acme", "a b", "ä", &"x".repeat(65)] {
            assert!(!is_valid_tenant(bad), "{bad}");
        }
    }

    #[test]
    fn revoked_keys_act_as_nobody() {
        let mut key = ApiKeyRecord {
            id: "k".into(),
            name: None,
            scope: KeyScope::Tenant,
            tenant: Some("a".into()),
            session_id: None,
            secret_sha256: String::new(),
            created_at: Utc::now(),
            revoked_at: None,
            expires_at: None,
        };
        let now = Utc::now();
        assert_eq!(key.principal(now), Some(Principal::Tenant("a".into())));
        key.expires_at = Some(now + chrono::Duration::seconds(1));
        assert_eq!(key.principal(now), Some(Principal::Tenant("a".into())));
        assert_eq!(
            key.principal(now + chrono::Duration::seconds(1)),
            None,
            "expired"
        );
        key.expires_at = None;
        key.revoked_at = Some(now);
        assert_eq!(key.principal(now), None);
    }
}
