//! API keys: issuing them (a random secret, shown once, stored only as its SHA-256),
//! listing, revoking, and turning a presented key into the [`Principal`] it acts as, with a
//! constant-time comparison of the hashes.
//!
//! These functions take the store directly so `corral keys` can manage keys without a
//! running server; who may call them over HTTP is decided by [`crate::Engine`]. Reading
//! keys from requests is the API's job. Secrets are never logged.
//!
//! A key has two spellings that authenticate alike: `corral_<id>_<secret>` (issued) and
//! `e2b_<id><secret>` ([`e2b_form`]), which matches the `^e2b_[0-9a-f]+$` the E2B SDKs
//! check `E2B_API_KEY` against. Both name the same stored key.

use std::fmt;

use chrono::Utc;
use corral_core::{is_valid_tenant, ApiKeyRecord, KeyScope, Principal, SessionId};
use corral_store::Store;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::EngineError;

/// Every key starts with this, so keys are easy to recognise (and to scan for in leaks).
pub const KEY_PREFIX: &str = "corral_";
/// The prefix of a key's E2B spelling (see [`e2b_form`]).
pub const E2B_KEY_PREFIX: &str = "e2b_";
/// Random bytes in a key id (shown as hex).
const ID_BYTES: usize = 6;
/// Random bytes in a key secret (shown as hex).
const SECRET_BYTES: usize = 32;
/// Longest key name.
const MAX_KEY_NAME_CHARS: usize = 256;

/// What to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub scope: KeyScope,
    /// Required for tenant keys; for session keys, defaults to the session's tenant.
    pub tenant: Option<String>,
    /// Required for session keys.
    pub session_id: Option<SessionId>,
    pub name: Option<String>,
    /// When the key stops working; must be in the future.
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

/// A freshly issued key: the record, and the whole key, which is not stored and cannot be
/// shown again.
pub struct IssuedKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("record", &self.record)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn random_hex(bytes: usize) -> Result<String, EngineError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::getrandom(&mut buffer)
        .map_err(|error| EngineError::Randomness(error.to_string()))?;
    Ok(hex::encode(buffer))
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Creates a key and stores its hash.
pub async fn issue_key(store: &dyn Store, new: NewKey) -> Result<IssuedKey, EngineError> {
    if let Some(name) = &new.name {
        if name.chars().count() > MAX_KEY_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(EngineError::InvalidInput(format!(
                "a key name has at most {MAX_KEY_NAME_CHARS} characters and no control characters"
            )));
        }
    }
    let (tenant, session_id) = match new.scope {
        KeyScope::Admin => {
            if new.tenant.is_some() || new.session_id.is_some() {
                return Err(EngineError::InvalidInput(
                    "admin keys belong to no tenant or session".into(),
                ));
            }
            (None, None)
        }
        KeyScope::Tenant => {
            if new.session_id.is_some() {
                return Err(EngineError::InvalidInput(
                    "tenant keys name no session; use scope session".into(),
                ));
            }
            let tenant = new
                .tenant
                .ok_or_else(|| EngineError::InvalidInput("a tenant key needs a tenant".into()))?;
            (Some(tenant), None)
        }
        KeyScope::Session => {
            let session_id = new
                .session_id
                .ok_or_else(|| EngineError::InvalidInput("a session key needs a session".into()))?;
            let session = store
                .get_session(session_id)
                .await?
                .ok_or(EngineError::SessionNotFound(session_id))?;
            if new
                .tenant
                .as_ref()
                .is_some_and(|tenant| *tenant != session.tenant)
            {
                return Err(EngineError::SessionNotFound(session_id));
            }
            (Some(session.tenant), Some(session_id))
        }
    };
    if let Some(tenant) = &tenant {
        if !is_valid_tenant(tenant) {
            return Err(EngineError::InvalidInput(format!(
                "tenant names are 1 to {} characters of a-z, 0-9, '-', '_' and '.'",
                corral_core::MAX_TENANT_CHARS
            )));
        }
    }
    if new.expires_at.is_some_and(|expiry| expiry <= Utc::now()) {
        return Err(EngineError::InvalidInput(
            "expires_at must be in the future".to_owned(),
        ));
    }
    let id = random_hex(ID_BYTES)?;
    let secret = random_hex(SECRET_BYTES)?;
    let record = ApiKeyRecord {
        id: id.clone(),
        name: new.name,
        scope: new.scope,
        tenant,
        session_id,
        secret_sha256: hex::encode(sha256(&secret)),
        created_at: Utc::now(),
        revoked_at: None,
        expires_at: new.expires_at,
    };
    store.insert_api_key(&record).await?;
    tracing::info!(key_id = %record.id, scope = %record.scope, tenant = record.tenant.as_deref().unwrap_or("none"), "API key issued");
    Ok(IssuedKey {
        record,
        key: format!("{KEY_PREFIX}{id}_{secret}"),
    })
}

/// Keys in creation order, optionally of one tenant.
pub async fn list_keys(
    store: &dyn Store,
    tenant: Option<&str>,
) -> Result<Vec<ApiKeyRecord>, EngineError> {
    Ok(store.list_api_keys(tenant).await?)
}

/// Revokes a key (revoking a revoked key returns it unchanged).
pub async fn revoke_key(store: &dyn Store, id: &str) -> Result<ApiKeyRecord, EngineError> {
    if store.revoke_api_key(id, Utc::now()).await? {
        tracing::info!(key_id = %id, "API key revoked");
    }
    store
        .get_api_key(id)
        .await?
        .ok_or_else(|| EngineError::KeyNotFound(id.to_owned()))
}

/// The E2B spelling of an issued key: `e2b_` followed by the key's id and secret (both
/// lowercase hex), as the E2B SDKs require of `E2B_API_KEY`. `None` for anything that is
/// not a key in corral's spelling.
pub fn e2b_form(key: &str) -> Option<String> {
    let (id, secret) = key.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let hex = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (id.len() == ID_BYTES * 2 && secret.len() == SECRET_BYTES * 2 && hex(id) && hex(secret))
        .then(|| format!("{E2B_KEY_PREFIX}{id}{secret}"))
}

/// A presented key's id and secret, in either spelling.
fn split_key(presented: &str) -> Option<(&str, &str)> {
    if let Some(rest) = presented.strip_prefix(KEY_PREFIX) {
        return rest.split_once('_');
    }
    let rest = presented.strip_prefix(E2B_KEY_PREFIX)?;
    (rest.len() == (ID_BYTES + SECRET_BYTES) * 2 && rest.is_ascii())
        .then(|| rest.split_at(ID_BYTES * 2))
}

/// Who a presented key acts as; `None` for anything that is not a live key.
pub async fn principal_for_key(
    store: &dyn Store,
    presented: &str,
) -> Result<Option<Principal>, EngineError> {
    let Some((id, secret)) = split_key(presented) else {
        return Ok(None);
    };
    if id.len() != ID_BYTES * 2 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some(record) = store.get_api_key(id).await? else {
        return Ok(None);
    };
    let Ok(stored) = hex::decode(&record.secret_sha256) else {
        return Ok(None);
    };
    let presented_hash = sha256(secret);
    if bool::from(presented_hash.as_slice().ct_eq(stored.as_slice())) {
        Ok(record.principal(Utc::now()))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_an_e2b_spelling_naming_the_same_key() {
        let id = "0123456789ab";
        let secret = "f".repeat(SECRET_BYTES * 2);
        let key = format!("{KEY_PREFIX}{id}_{secret}");
        let e2b = e2b_form(&key).expect("e2b form");
        assert_eq!(e2b, format!("e2b_{id}{secret}"));
        assert_eq!(split_key(&e2b), Some((id, secret.as_str())));
        assert_eq!(split_key(&key), Some((id, secret.as_str())));
        assert_eq!(e2b_form("corral_short_key"), None);
        assert_eq!(e2b_form(&e2b), None);
        assert_eq!(split_key("e2b_0123"), None);
    }
}
