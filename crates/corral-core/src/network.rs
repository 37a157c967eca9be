//! A session's network policy: `"none"` (loopback only, the default) or `{"allow": [...]}`,
//! an allow-list of destinations — IPv4 CIDRs or addresses (optionally with a port), domain
//! names (optionally with a port), and `host.corral.internal:PORT` (a service on the host's
//! own loopback). Parsing, validation and the "within the operator's maximum" rule.
//!
//! Deliberately does no IO: resolving names and enforcing the rules happen elsewhere (the
//! engine and the sandbox).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name that reaches the host's own loopback from inside a session (with a port).
pub const HOST_LOOPBACK_NAME: &str = "host.corral.internal";
/// The cloud metadata address: refused unless an entry names it explicitly.
pub const METADATA_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Most entries one allow-list may hold.
pub const MAX_ALLOW_ENTRIES: usize = 256;

/// An IPv4 network: an address and a prefix length (host bits cleared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `address/prefix` with host bits cleared; `None` for a prefix above 32.
    pub fn new(address: Ipv4Addr, prefix: u8) -> Option<Self> {
        if prefix > 32 {
            return None;
        }
        let mask = Self::mask(prefix);
        Some(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix,
        })
    }

    /// The single address `address/32`.
    pub fn host(address: Ipv4Addr) -> Self {
        Ipv4Cidr {
            network: address,
            prefix: 32,
        }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `address` lies in this network.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// Whether every address of `other` lies in this network.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(other.network)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == 32 {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

/// One destination a session may connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AllowEntry {
    /// An IPv4 network or address; `port: None` is every port (TCP and UDP).
    Network { cidr: Ipv4Cidr, port: Option<u16> },
    /// A domain name (lower case) resolved by the server; `port: None` is every port. A
    /// leading `*.` matches every subdomain (only in the operator's maximum).
    Name { name: String, port: Option<u16> },
    /// A service on the host's own loopback, reached as `host.corral.internal:PORT`.
    HostLoopback { port: u16 },
}

/// Why an allow-list entry was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkPolicyError {
    #[error("{entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    #[error("at most {MAX_ALLOW_ENTRIES} allow entries")]
    TooManyEntries,
    #[error("network must be \"none\" or {{\"allow\": [...]}}")]
    BadShape,
}

fn bad(entry: &str, reason: impl Into<String>) -> NetworkPolicyError {
    NetworkPolicyError::BadEntry {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

fn parse_port(entry: &str, text: &str) -> Result<u16, NetworkPolicyError> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(bad(entry, format!("{text:?} is not a port (1-65535)"))),
    }
}

/// Whether `name` is a valid domain name (letters, digits, hyphens; labels of 1-63; at most
/// 253 characters), optionally starting with `*.`.
fn is_domain_name(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
        && !bare
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|byte| byte.is_ascii_digit()))
}

impl FromStr for AllowEntry {
    type Err = NetworkPolicyError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let text = entry.trim();
        if text.is_empty() {
            return Err(bad(entry, "empty entry"));
        }
        if text.contains('[') || text.matches(':').count() > 1 {
            return Err(bad(entry, "IPv6 destinations are not supported"));
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(parse_port(entry, port)?)),
            None => (text, None),
        };
        let (address, prefix) = match host.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (host, None),
        };
        if let Ok(address) = address.parse::<Ipv4Addr>() {
            let prefix = match prefix {
                None => 32,
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= 32)
                    .ok_or_else(|| {
                        bad(entry, format!("{prefix:?} is not a prefix length (0-32)"))
                    })?,
            };
            let cidr = Ipv4Cidr::new(address, prefix).ok_or_else(|| bad(entry, "bad prefix"))?;
            if cidr.network() != address {
                return Err(bad(entry, format!("host bits set; the network is {cidr}")));
            }
            return Ok(AllowEntry::Network { cidr, port });
        }
        if prefix.is_some()
            || address
                .bytes()
                .all(|byte| byte.is_ascii_digit() || byte == b'.')
        {
            return Err(bad(entry, "not an IPv4 address or CIDR"));
        }
        let name = host.to_ascii_lowercase();
        if name == HOST_LOOPBACK_NAME {
            return match port {
                Some(port) => Ok(AllowEntry::HostLoopback { port }),
                None => Err(bad(
                    entry,
                    format!("{HOST_LOOPBACK_NAME} needs a port ({HOST_LOOPBACK_NAME}:PORT)"),
                )),
            };
        }
        if !is_domain_name(&name) {
            return Err(bad(entry, "not a domain name, IPv4 address or CIDR"));
        }
        Ok(AllowEntry::Name { name, port })
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, port) = match self {
            AllowEntry::Network { cidr, port } => (cidr.to_string(), *port),
            AllowEntry::Name { name, port } => (name.clone(), *port),
            AllowEntry::HostLoopback { port } => (HOST_LOOPBACK_NAME.to_owned(), Some(*port)),
        };
        match port {
            Some(port) => write!(f, "{host}:{port}"),
            None => write!(f, "{host}"),
        }
    }
}

impl Serialize for AllowEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn port_covers(wide: Option<u16>, narrow: Option<u16>) -> bool {
    wide.is_none() || wide == narrow
}

fn name_covers(wide: &str, narrow: &str) -> bool {
    match wide.strip_prefix("*.") {
        Some(suffix) => {
            let narrow = narrow.strip_prefix("*.").unwrap_or(narrow);
            narrow
                .strip_suffix(suffix)
                .is_some_and(|head| head.ends_with('.'))
        }
        None => wide == narrow,
    }
}

impl AllowEntry {
    /// Whether every connection `other` allows is also allowed by `self`.
    pub fn covers(&self, other: &AllowEntry) -> bool {
        match (self, other) {
            (
                AllowEntry::Network { cidr, port },
                AllowEntry::Network {
                    cidr: narrow,
                    port: narrow_port,
                },
            ) => cidr.covers(narrow) && port_covers(*port, *narrow_port),
            (
                AllowEntry::Name { name, port },
                AllowEntry::Name {
                    name: narrow,
                    port: narrow_port,
                },
            ) => name_covers(name, narrow) && port_covers(*port, *narrow_port),
            (AllowEntry::HostLoopback { port }, AllowEntry::HostLoopback { port: narrow }) => {
                port == narrow
            }
            _ => false,
        }
    }

    /// Whether this entry names a domain with a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        matches!(self, AllowEntry::Name { name, .. } if name.starts_with("*."))
    }
}

/// A session's network: nothing but its own loopback, or an allow-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetworkPolicy {
    #[default]
    None,
    Allow(Vec<AllowEntry>),
}

impl NetworkPolicy {
    /// An allow-list from its entries' text, each checked; an empty list is `None`.
    pub fn allow<S: AsRef<str>>(entries: &[S]) -> Result<Self, NetworkPolicyError> {
        if entries.len() > MAX_ALLOW_ENTRIES {
            return Err(NetworkPolicyError::TooManyEntries);
        }
        let mut parsed = entries
            .iter()
            .map(|entry| entry.as_ref().parse::<AllowEntry>())
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort();
        parsed.dedup();
        Ok(if parsed.is_empty() {
            NetworkPolicy::None
        } else {
            NetworkPolicy::Allow(parsed)
        })
    }

    /// The allowed destinations (none for `None`).
    pub fn entries(&self) -> &[AllowEntry] {
        match self {
            NetworkPolicy::None => &[],
            NetworkPolicy::Allow(entries) => entries,
        }
    }

    pub fn is_none(&self) -> bool {
        self.entries().is_empty()
    }

    /// The entries of this policy that no entry of `maximum` covers (empty: within it).
    /// Wildcard names are the operator's: a session must name hosts.
    pub fn beyond(&self, maximum: &[AllowEntry]) -> Vec<AllowEntry> {
        self.entries()
            .iter()
            .filter(|entry| entry.is_wildcard() || !maximum.iter().any(|wide| wide.covers(entry)))
            .cloned()
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PolicyShape {
    Word(String),
    Allow { allow: Vec<String> },
}

impl Serialize for NetworkPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shape = match self {
            NetworkPolicy::None => PolicyShape::Word("none".to_owned()),
            NetworkPolicy::Allow(entries) => PolicyShape::Allow {
                allow: entries.iter().map(ToString::to_string).collect(),
            },
        };
        shape.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NetworkPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        NetworkPolicy::from_json(&value).map_err(serde::de::Error::custom)
    }
}

impl NetworkPolicy {
    /// Reads `"none"` or `{"allow": [...]}`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, NetworkPolicyError> {
        match serde_json::from_value::<PolicyShape>(value.clone()) {
            Ok(PolicyShape::Word(word)) if word == "none" => Ok(NetworkPolicy::None),
            Ok(PolicyShape::Allow { allow }) => NetworkPolicy::allow(&allow),
            _ => Err(NetworkPolicyError::BadShape),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> AllowEntry {
        text.parse().expect(text)
    }

    #[test]
    fn parses_each_kind_of_entry() {
        assert_eq!(
            entry("10.0.0.0/8"),
            AllowEntry::Network {
                cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap(),
                port: None
            }
        );
        assert_eq!(
            entry("192.0.2.7:443"),
            AllowEntry::Network {
                cidr: Ipv4Cidr::host(Ipv4Addr::new(192, 0, 2, 7)),
                port: Some(443)
            }
        );
        assert_eq!(
            entry("PyPI.org"),
            AllowEntry::Name {
                name: "pypi.org".into(),
                port: None
            }
        );
        assert_eq!(
            entry("host.corral.internal:8080"),
            AllowEntry::HostLoopback { port: 8080 }
        );
        assert_eq!(entry("10.1.0.0/16:53").to_string(), "10.1.0.0/16:53");
    }

    #[test]
    fn refuses_bad_entries_with_a_reason() {
        for (text, reason) in [
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/33", "prefix"),
            ("300.1.1.1", "IPv4"),
            ("example.com:0", "port"),
            ("example.com:99999", "port"),
            ("host.corral.internal", "needs a port"),
            ("exa mple.com", "domain"),
            ("::1", "IPv6"),
            ("", "empty"),
            ("-bad-.com", "domain"),
        ] {
            let error = text.parse::<AllowEntry>().unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn reads_and_writes_both_shapes() {
        let none: NetworkPolicy = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(none, NetworkPolicy::None);
        let allow: NetworkPolicy =
            serde_json::from_str(r#"{"allow": ["example.com", "10.0.0.0/8"]}"#).unwrap();
        assert_eq!(allow.entries().len(), 2);
        assert_eq!(
            serde_json::to_string(&allow).unwrap(),
            r#"{"allow":["10.0.0.0/8","example.com"]}"#
        );
        assert_eq!(
            serde_json::from_str::<NetworkPolicy>(r#"{"allow": []}"#).unwrap(),
            NetworkPolicy::None
        );
        assert!(serde_json::from_str::<NetworkPolicy>("\"all\"").is_err());
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"allow": ["a b"]}"#).is_err());
    }

    #[test]
    fn within_the_maximum() {
        let maximum = vec![
            entry("10.0.0.0/8"),
            entry("*.example.com:443"),
            entry("pypi.org"),
            entry("host.corral.internal:8080"),
        ];
        let inside = NetworkPolicy::allow(&[
            "10.1.2.0/24",
            "10.1.2.3:22",
            "files.example.com:443",
            "pypi.org:443",
            "host.corral.internal:8080",
        ])
        .unwrap();
        assert!(inside.beyond(&maximum).is_empty());
        let outside = NetworkPolicy::allow(&[
            "11.0.0.0/8",
            "example.com:443",
            "files.example.com:80",
            "host.corral.internal:22",
            "*.example.com:443",
        ])
        .unwrap();
        assert_eq!(outside.beyond(&maximum).len(), 5);
    }

    #[test]
    fn cidr_arithmetic() {
        let wide = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
        assert!(wide.contains(Ipv4Addr::new(10, 255, 0, 1)));
        assert!(!wide.contains(Ipv4Addr::new(11, 0, 0, 1)));
        let all = Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap();
        assert!(all.covers(&wide) && !wide.covers(&all));
        assert!(all.contains(METADATA_ADDRESS));
    }
}
