//! Who a request acts as (a presented key, or open mode) and who may issue, list and revoke
//! which keys: admins any, a tenant its own tenant's, a session key none.
//!
//! Making, hashing and checking keys against the store is `keys`' job; reading keys from
//! requests is the API's.

use corral_core::{ApiKeyRecord, KeyScope, Principal};

use crate::keys::{self, IssuedKey, NewKey};
use crate::{Engine, EngineError};

impl Engine {
    /// Who a request acts as: the principal of `presented`, or — with no key presented, in
    /// open mode, while the store has no active admin or tenant key — admin.
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Principal, EngineError> {
        match presented {
            Some(key) => match keys::principal_for_key(self.inner.store.as_ref(), key).await? {
                Some(principal) => Ok(principal),
                None => {
                    // Never the key itself: only that one was refused.
                    tracing::warn!("authentication failed: an API key was refused");
                    Err(EngineError::Unauthorized)
                }
            },
            None if self.inner.open_mode => {
                if !self.inner.store.has_active_api_keys().await? {
                    return Ok(Principal::Admin);
                }
                // A key made offline (`corral keys create --data-dir`) closes open mode too.
                self.note_keys_required();
                Err(EngineError::Unauthorized)
            }
            None => Err(EngineError::Unauthorized),
        }
    }

    /// Logs, once, that a server which was open now requires keys.
    fn note_keys_required(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.open_now.swap(false, Ordering::SeqCst) {
            tracing::info!(
                "the first API key exists: the server now requires a key on every request \
                 (open mode is over)"
            );
        }
    }

    /// Issues a key: admins any key; a tenant keys of its own tenant (tenant or session
    /// scope); a session key none.
    pub async fn issue_key(
        &self,
        caller: &Principal,
        mut new: NewKey,
    ) -> Result<IssuedKey, EngineError> {
        match caller {
            Principal::Admin => {}
            Principal::Tenant(tenant) => {
                if new.scope == KeyScope::Admin {
                    return Err(EngineError::Forbidden(
                        "a tenant key cannot issue admin keys".into(),
                    ));
                }
                if new.tenant.as_ref().is_some_and(|named| named != tenant) {
                    return Err(EngineError::Forbidden(
                        "a tenant key issues keys of its own tenant only".into(),
                    ));
                }
                new.tenant = Some(tenant.clone());
                if let Some(session_id) = new.session_id {
                    // Another tenant's session is not found, as everywhere else.
                    self.get_session(caller, session_id).await?;
                }
            }
            Principal::Session { .. } => {
                return Err(EngineError::Forbidden(
                    "a session key cannot manage keys".into(),
                ))
            }
        }
        let scope = new.scope;
        let issued = keys::issue_key(self.inner.store.as_ref(), new).await?;
        if scope != KeyScope::Session {
            self.note_keys_required();
        }
        Ok(issued)
    }

    /// The keys `caller` may manage: all for admins, its tenant's for a tenant.
    pub async fn list_keys(&self, caller: &Principal) -> Result<Vec<ApiKeyRecord>, EngineError> {
        match caller {
            Principal::Session { .. } => Err(EngineError::Forbidden(
                "a session key cannot manage keys".into(),
            )),
            _ => keys::list_keys(self.inner.store.as_ref(), caller.tenant()).await,
        }
    }

    /// Revokes a key `caller` may manage (others' keys are not found).
    pub async fn revoke_key(
        &self,
        caller: &Principal,
        id: &str,
    ) -> Result<ApiKeyRecord, EngineError> {
        if let Principal::Session { .. } = caller {
            return Err(EngineError::Forbidden(
                "a session key cannot manage keys".into(),
            ));
        }
        let key = self
            .inner
            .store
            .get_api_key(id)
            .await?
            .ok_or_else(|| EngineError::KeyNotFound(id.to_owned()))?;
        if caller.tenant().is_some() && caller.tenant() != key.tenant.as_deref() {
            return Err(EngineError::KeyNotFound(id.to_owned()));
        }
        keys::revoke_key(self.inner.store.as_ref(), id).await
    }
}
