//! Sessions' network policies against the operator's maximum (`[network]` in the config):
//! whether sessions may connect at all, the widest allow-list, the per-session connection
//! cap, names the operator maps to addresses; and the resolution of an allowed policy into
//! the sandbox's rules (names looked up here, by the server, never by the session).
//!
//! Deliberately does not enforce anything itself (the sandbox's nftables rules do) and
//! knows nothing of HTTP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use corral_core::{AllowEntry, Ipv4Cidr, NetworkPolicy};
use corral_worker::{Destination, NetworkRules, NetworkSetup};

use crate::EngineError;

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

    /// The sandbox's setup for `policy` (`None` for loopback only): names resolved from
    /// `hosts`, else by the server's resolver (IPv4 only).
    pub async fn resolve(
        &self,
        policy: &NetworkPolicy,
    ) -> Result<Option<NetworkSetup>, EngineError> {
        if policy.is_none() {
            return Ok(None);
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
                AllowEntry::Name { name, port } => {
                    for address in self.addresses_of(name).await? {
                        rules.names.push((name.clone(), address));
                        rules.destinations.push(if address.is_loopback() {
                            Destination::HostLoopback { port: *port }
                        } else {
                            Destination::Remote {
                                cidr: Ipv4Cidr::host(address),
                                port: *port,
                            }
                        });
                    }
                }
            }
        }
        Ok(Some(rules.setup(&self.slirp4netns, &self.nft)))
    }

    async fn addresses_of(&self, name: &str) -> Result<Vec<Ipv4Addr>, EngineError> {
        if let Some(address) = self.hosts.get(name) {
            return Ok(vec![*address]);
        }
        let found = tokio::net::lookup_host((name, 0)).await.map_err(|error| {
            EngineError::InvalidInput(format!("network: cannot resolve {name:?}: {error}"))
        })?;
        let mut addresses: Vec<Ipv4Addr> = found
            .filter_map(|address| match address.ip() {
                std::net::IpAddr::V4(address) => Some(address),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(EngineError::InvalidInput(format!(
                "network: {name:?} has no IPv4 address"
            )));
        }
        Ok(addresses)
    }
}
