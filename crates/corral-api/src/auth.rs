//! Reading credentials from requests: an API key in `Authorization: Bearer <key>` or
//! `X-API-Key: <key>`, turned into the engine's [`Principal`] by the [`Caller`] extractor.
//!
//! Whether a key is valid and what it may reach is the engine's decision; this module never
//! logs or echoes a presented key. Compatibility surfaces use [`authenticate`] with their own
//! error shapes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use corral_core::Principal;
use corral_engine::EngineError;

use crate::problem::Problem;
use crate::state::ApiState;

/// The key a request presents, if any: `Authorization: Bearer` first, then `X-API-Key`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    })
}

/// Who the request acts as, or why it may not act at all.
pub async fn authenticate(parts: &Parts, state: &ApiState) -> Result<Principal, EngineError> {
    state
        .engine
        .authenticate(presented_key(&parts.headers))
        .await
}

/// The authenticated caller of a native route (401 problem otherwise).
pub struct Caller(pub Principal);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Problem> {
        Ok(Caller(authenticate(parts, state).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("x-api-key", "k2".parse().expect("header"));
        assert_eq!(presented_key(&headers), Some("k2"));
        headers.insert(header::AUTHORIZATION, "bearer  k1".parse().expect("header"));
        assert_eq!(presented_key(&headers), Some("k1"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(presented_key(&headers), Some("k2"));
    }
}
