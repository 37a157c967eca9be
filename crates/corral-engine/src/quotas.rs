//! Per-tenant quotas: live sessions and executions in flight (queued or running) per tenant.
//!
//! A claim is taken before the work starts and given back when its guard is dropped, so the
//! counts cannot drift. This module only counts; which tenant a session belongs to is the
//! engine's decision, and the server-wide session cap is `engine`'s `SessionSlot`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{measurements, EngineError};

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaKind {
    /// Live sessions (starting, idle or busy).
    Sessions,
    /// Executions accepted and not finished (queued or running).
    Executions,
}

impl QuotaKind {
    pub fn describe(self) -> &'static str {
        match self {
            QuotaKind::Sessions => "live sessions",
            QuotaKind::Executions => "executions in flight",
        }
    }
}

#[derive(Debug, Default)]
struct Usage {
    sessions: usize,
    executions: usize,
}

impl Usage {
    fn count(&mut self, kind: QuotaKind) -> &mut usize {
        match kind {
            QuotaKind::Sessions => &mut self.sessions,
            QuotaKind::Executions => &mut self.executions,
        }
    }
}

/// Every tenant's usage against the configured quotas (`None`: unlimited).
pub(crate) struct TenantQuotas {
    max_sessions: Option<usize>,
    max_executions: Option<usize>,
    usage: Arc<Mutex<HashMap<String, Usage>>>,
}

/// One unit of a tenant's quota, given back on drop.
pub(crate) struct QuotaClaim {
    usage: Arc<Mutex<HashMap<String, Usage>>>,
    tenant: String,
    kind: QuotaKind,
}

impl TenantQuotas {
    pub fn new(max_sessions: Option<usize>, max_executions: Option<usize>) -> TenantQuotas {
        TenantQuotas {
            max_sessions,
            max_executions,
            usage: Arc::default(),
        }
    }

    /// Takes one unit of `tenant`'s `kind` quota, or says it is used up.
    pub fn claim(&self, tenant: &str, kind: QuotaKind) -> Result<QuotaClaim, EngineError> {
        let limit = match kind {
            QuotaKind::Sessions => self.max_sessions,
            QuotaKind::Executions => self.max_executions,
        };
        let mut usage = self
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = usage.entry(tenant.to_owned()).or_default().count(kind);
        if let Some(limit) = limit {
            if *count >= limit {
                measurements::refused(match kind {
                    QuotaKind::Sessions => "tenant_sessions",
                    QuotaKind::Executions => "tenant_executions",
                });
                return Err(EngineError::QuotaExceeded { kind, limit });
            }
        }
        *count += 1;
        Ok(QuotaClaim {
            usage: self.usage.clone(),
            tenant: tenant.to_owned(),
            kind,
        })
    }
}

impl Drop for QuotaClaim {
    fn drop(&mut self) {
        let mut usage = self
            .usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = usage.get_mut(&self.tenant) {
            let count = entry.count(self.kind);
            *count = count.saturating_sub(1);
            if entry.sessions == 0 && entry.executions == 0 {
                usage.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_counted_per_tenant_and_returned_on_drop() {
        let quotas = TenantQuotas::new(Some(1), None);
        let first = quotas.claim("a", QuotaKind::Sessions).expect("first");
        assert!(quotas.claim("a", QuotaKind::Sessions).is_err());
        let _other = quotas
            .claim("b", QuotaKind::Sessions)
            .expect("another tenant");
        let _unlimited: Vec<_> = (0..10)
            .map(|_| quotas.claim("a", QuotaKind::Executions).expect("unlimited"))
            .collect();
        drop(first);
        assert!(quotas.claim("a", QuotaKind::Sessions).is_ok());
    }
}
