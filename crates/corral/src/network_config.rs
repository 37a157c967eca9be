//! `[network]` in the config file: the operator's network maximum for sessions — whether
//! they may connect at all, the widest allow-list a session may ask within, the per-session
//! connection cap, names mapped to addresses — and where the enforcing binaries are.
//!
//! Only reads and validates; the engine checks sessions against it and the sandbox enforces.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use corral_core::{AllowEntry, NetworkPolicy};
use corral_engine::NetworkSettings;
use serde::Deserialize;

/// Connections a session may have open at once unless configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNetwork {
    /// `false` (default): sessions have their own loopback only, whatever they ask.
    pub sessions_may_connect: Option<bool>,
    /// The widest allow-list: CIDRs, `host:port`, domain names (`*.example.com`),
    /// `host.corral.internal:PORT`.
    pub allow: Option<Vec<String>>,
    /// Most connections one session may have open at once (0: no cap).
    pub max_connections: Option<u32>,
    /// Extra name → IPv4 address pairs, looked up before DNS.
    pub hosts: Option<BTreeMap<String, String>>,
    /// The binaries (found on `PATH`, `/usr/bin`, `/usr/sbin` unless given).
    pub slirp4netns: Option<PathBuf>,
    pub nft: Option<PathBuf>,
}

fn find_binary(name: &str, configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured {
        return path.is_file().then(|| path.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

impl FileNetwork {
    /// The engine's settings; with sessions allowed to connect, the binaries must exist.
    pub fn apply(&self) -> anyhow::Result<NetworkSettings> {
        let sessions_may_connect = self.sessions_may_connect.unwrap_or(false);
        let allow = match NetworkPolicy::allow(self.allow.as_deref().unwrap_or(&[]))
            .context("network.allow")?
        {
            NetworkPolicy::None => Vec::new(),
            NetworkPolicy::Allow(entries) => entries,
        };
        let mut hosts = BTreeMap::new();
        for (name, address) in self.hosts.iter().flatten() {
            let entry: AllowEntry = name
                .parse()
                .with_context(|| format!("network.hosts: {name:?}"))?;
            if !matches!(entry, AllowEntry::Name { port: None, .. }) || entry.is_wildcard() {
                bail!("network.hosts: {name:?} is not a domain name");
            }
            let address: Ipv4Addr = address.parse().with_context(|| {
                format!("network.hosts.{name}: {address:?} is not an IPv4 address")
            })?;
            hosts.insert(name.to_ascii_lowercase(), address);
        }
        let slirp4netns = find_binary("slirp4netns", self.slirp4netns.as_deref());
        let nft = find_binary("nft", self.nft.as_deref());
        if sessions_may_connect {
            for (name, found) in [("slirp4netns", &slirp4netns), ("nft", &nft)] {
                if found.is_none() {
                    bail!(
                        "network.sessions_may_connect = true needs {name} (Debian packages \
                         slirp4netns and nftables), which was not found"
                    );
                }
            }
        }
        Ok(NetworkSettings {
            sessions_may_connect,
            allow,
            max_connections: self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            hosts,
            slirp4netns: slirp4netns.unwrap_or_else(|| "slirp4netns".into()),
            nft: nft.unwrap_or_else(|| "nft".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> anyhow::Result<NetworkSettings> {
        toml::from_str::<crate::config::FileConfig>(text)
            .map_err(anyhow::Error::from)
            .and_then(|file| file.network.apply())
    }

    #[test]
    fn off_by_default() {
        let settings = network("").expect("defaults");
        assert!(!settings.sessions_may_connect);
        assert!(settings.allow.is_empty());
        assert_eq!(settings.max_connections, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn entries_and_hosts_are_checked() {
        let settings = network(
            "[network]\nallow = [\"10.0.0.0/8\", \"pypi.org:443\"]\nmax_connections = 4\n\
             [network.hosts]\n\"svc.test\" = \"127.0.0.1\"\n",
        )
        .expect("valid");
        assert_eq!(settings.allow.len(), 2);
        assert_eq!(settings.hosts["svc.test"], Ipv4Addr::LOCALHOST);
        assert!(network("[network]\nallow = [\"10.0.0.1/8\"]\n").is_err());
        assert!(network("[network.hosts]\n\"svc.test\" = \"nowhere\"\n").is_err());
        assert!(network("[network.hosts]\n\"10.0.0.1\" = \"10.0.0.1\"\n").is_err());
        assert!(network("[network]\nallowed = []\n").is_err());
    }
}
