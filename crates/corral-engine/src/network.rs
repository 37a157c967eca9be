//! Sessions' network policies against the operator's maximum (`[network]` in the config):
//! whether sessions may connect at all, the widest allow-list, the per-session connection
//! cap, names the operator maps to addresses; and the turning of an allowed policy into the
//! sandbox's rules and, for domain names, the session's proxy listeners (`corral-egress`:
//! names are looked up and dialled by the server, never by the session).
//!
//! Deliberately does not enforce anything itself (the sandbox's nftables rules do) and
//! knows nothing of HTTP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use corral_core::{AllowEntry, NetworkPolicy};
use corral_egress::{NameResolver, ProxyPolicy, SessionProxy, DNS_PORT_MARK};
use corral_worker::{Destination, NetworkRules, NetworkSetup, NAMES_ADDRESS};

use crate::EngineError;

/// What one session's network needs while it lives.
#[derive(Debug, Default)]
pub(crate) struct PreparedNetwork {
    /// For the sandbox (`None`: loopback only).
    pub setup: Option<NetworkSetup>,
    /// The session's name proxy; dropped when the session ends.
    pub proxy: Option<SessionProxy>,
}

impl PreparedNetwork {
    /// The proxy's `(session port, listener port)` pairs, for the session's record.
    pub fn egress_ports(&self) -> Vec<(u16, u16)> {
        self.proxy
            .as_ref()
            .map(|proxy| proxy.ports().to_vec())
            .unwrap_or_default()
    }
}

/// The operator's maximum, and the binaries that enforce it.
#[derive(Clone, Debug, Default)]
pub struct NetworkSettings {
    /// `false` (the default): every session has its loopback only.
    pub sessions_may_connect: bool,
    /// The widest allow-list a session may ask within.
    pub allow: Vec<AllowEntry>,
    /// Most connections one session may have open at once (0: no cap).
    pub max_connections: u32,
    /// Names the operator maps to addresses (looked up before DNS).
    pub hosts: BTreeMap<String, Ipv4Addr>,
    pub slirp4netns: PathBuf,
    pub nft: PathBuf,
}

impl NetworkSettings {
    /// Checks `policy` against the maximum: refused entries are named.
    pub fn check(&self, policy: &NetworkPolicy) -> Result<(), EngineError> {
        if policy.is_none() {
            return Ok(());
        }
        if !self.sessions_may_connect {
            return Err(EngineError::Forbidden(
                "network: this server gives sessions no network ([network] sessions_may_connect = false)"
                    .into(),
            ));
        }
        let beyond = policy.beyond(&self.allow);
        if !beyond.is_empty() {
            let names: Vec<String> = beyond.iter().map(ToString::to_string).collect();
            return Err(EngineError::Forbidden(format!(
                "network: beyond the operator's allow-list: {}",
                names.join(", ")
            )));
        }
        Ok(())
    }

    /// Everything a session with `policy` needs: the sandbox's setup and, for domain
    /// names, its proxy listeners — on `egress_ports` when the session already has them (a
    /// restart or an adoption: its rules point there), else on free ports. `(None, None)`
    /// for loopback only.
    pub(crate) async fn prepare(
        &self,
        policy: &NetworkPolicy,
        egress_ports: &[(u16, u16)],
    ) -> Result<PreparedNetwork, EngineError> {
        if policy.is_none() {
            return Ok(PreparedNetwork::default());
        }
        let mut rules = NetworkRules {
            max_connections: self.max_connections,
            ..NetworkRules::default()
        };
        for entry in policy.entries() {
            match entry {
                AllowEntry::Network { cidr, port } => {
                    rules.destinations.push(Destination::Remote {
                        cidr: *cidr,
                        port: *port,
                    })
                }
                AllowEntry::HostLoopback { port } => {
                    rules
                        .destinations
                        .push(Destination::HostLoopback { port: Some(*port) });
                }
                AllowEntry::Name { name, .. } => rules.names.push(name.clone()),
            }
        }
        rules.names.sort();
        rules.names.dedup();
        let proxy_policy = ProxyPolicy::from_entries(policy.entries());
        let proxy = if rules.names.is_empty() {
            None
        } else {
            let wanted: Vec<(u16, u16)> = std::iter::once(DNS_PORT_MARK)
                .chain(proxy_policy.ports())
                .map(|port| {
                    let listener = egress_ports
                        .iter()
                        .find(|(session_port, _)| *session_port == port)
                        .map_or(0, |(_, listener)| *listener);
                    (port, listener)
                })
                .collect();
            let proxy = SessionProxy::bind(
                proxy_policy,
                NameResolver {
                    hosts: self.hosts.clone(),
                },
                &wanted,
                NAMES_ADDRESS,
                std::sync::Arc::new(crate::measurements::network_connection),
            )
            .await
            .map_err(|error| EngineError::WorkerStart(error.to_string()))?;
            for &(port, listener) in proxy.ports() {
                if port == DNS_PORT_MARK {
                    rules.dns_listener = Some(listener);
                } else {
                    rules.proxied.push((port, listener));
                }
            }
            Some(proxy)
        };
        Ok(PreparedNetwork {
            setup: Some(rules.setup(&self.slirp4netns, &self.nft)),
            proxy,
        })
    }
}
