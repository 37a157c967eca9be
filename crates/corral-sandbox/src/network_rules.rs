//! The nftables ruleset and `/etc/hosts` of a session with network access, rendered from the
//! destinations it may reach: pure text, no IO.
//!
//! Inside a session's network namespace slirp4netns puts the session at 10.0.2.100 behind a
//! gateway at 10.0.2.2, which (when allowed) forwards to the host's own loopback; 10.0.2.3 is
//! slirp's DNS forwarder, which sessions never reach. Allowed domain names resolve (through
//! the session's `/etc/hosts`) to one synthetic address, [`NAMES_ADDRESS`]; TCP to it is
//! redirected (DNAT) to the session's own proxy listeners on the host's loopback, one per
//! allowed port, which check the name and dial it (`corral-egress`). The output chain
//! accepts loopback, replies, then the allowed destinations; the cloud metadata address and
//! the host's loopback only when an entry names them; every other packet is refused (TCP
//! with a reset, the rest with ICMP).
//! Deliberately does not decide what is allowed (the engine does, within the operator's
//! maximum) and does not run `nft`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use corral_core::{Ipv4Cidr, HOST_LOOPBACK_NAME, METADATA_ADDRESS};

use crate::policy::NetworkSetup;

/// slirp4netns's gateway, which forwards to the host's loopback.
pub const SLIRP_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// slirp4netns's DNS forwarder.
pub const SLIRP_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The address every allowed domain name resolves to inside a session (TCP to it goes to the
/// session's proxy listeners; nothing else reaches it).
pub const NAMES_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 50);
/// The nftables table corral installs in each session's namespace.
pub const TABLE: &str = "corral";

/// One destination a session may reach, as the engine resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Addresses on the network (`port: None`: every port, any protocol).
    Remote { cidr: Ipv4Cidr, port: Option<u16> },
    /// A port (`None`: every port) of the host's own loopback.
    HostLoopback { port: Option<u16> },
}

/// What one session may reach and the names it sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkRules {
    pub destinations: Vec<Destination>,
    /// Allowed domain names (each resolves to [`NAMES_ADDRESS`]).
    pub names: Vec<String>,
    /// `(session-side port, proxy listener port on the host's loopback)` for names.
    pub proxied: Vec<(u16, u16)>,
    /// The session's DNS answerer's UDP port on the host's loopback (slirp's 10.0.2.3:53
    /// is redirected there); `None`: names come from `/etc/hosts` alone.
    pub dns_listener: Option<u16>,
    /// Most connections the session may have open at once (0: no cap).
    pub max_connections: u32,
}

fn port_match(port: Option<u16>) -> String {
    match port {
        Some(port) => format!(" meta l4proto {{ tcp, udp }} th dport {port}"),
        None => String::new(),
    }
}

impl NetworkRules {
    /// Whether any destination is on the host's loopback (slirp4netns must then forward
    /// there; the rules keep to the allowed ports).
    pub fn reaches_host_loopback(&self) -> bool {
        !self.proxied.is_empty()
            || self.dns_listener.is_some()
            || self
                .destinations
                .iter()
                .any(|destination| matches!(destination, Destination::HostLoopback { .. }))
    }

    /// The ruleset, in `nft -f` syntax.
    pub fn ruleset(&self) -> String {
        let mut text = String::new();
        if !self.proxied.is_empty() || self.dns_listener.is_some() {
            let _ = writeln!(text, "table ip {TABLE}_names {{");
            let _ = writeln!(text, "  chain output {{");
            let _ = writeln!(
                text,
                "    type nat hook output priority -100; policy accept;"
            );
            if let Some(listener) = self.dns_listener {
                let _ = writeln!(
                    text,
                    "    ip daddr {SLIRP_DNS} udp dport 53 dnat to {SLIRP_GATEWAY}:{listener}"
                );
            }
            for (port, listener) in &self.proxied {
                let _ = writeln!(
                    text,
                    "    ip daddr {NAMES_ADDRESS} tcp dport {port} dnat to {SLIRP_GATEWAY}:{listener}"
                );
            }
            let _ = writeln!(text, "  }}");
            let _ = writeln!(text, "}}");
        }
        let _ = writeln!(text, "table inet {TABLE} {{");
        let _ = writeln!(text, "  chain output {{");
        let _ = writeln!(text, "    type filter hook output priority 0; policy drop;");
        let _ = writeln!(text, "    oifname \"lo\" accept");
        let _ = writeln!(text, "    ct state established,related accept");
        let _ = writeln!(
            text,
            "    meta nfproto ipv6 reject with icmpx type admin-prohibited"
        );
        if self.max_connections > 0 {
            let _ = writeln!(
                text,
                "    ct state new ct count over {} reject with icmpx type admin-prohibited",
                self.max_connections
            );
        }
        // Explicitly named special addresses first, then the refusal of the rest of them,
        // then the general destinations (a wide CIDR never opens the host or the metadata).
        let mut general = Vec::new();
        if let Some(listener) = self.dns_listener {
            let _ = writeln!(
                text,
                "    ip daddr {SLIRP_GATEWAY} udp dport {listener} accept"
            );
        }
        for (_, listener) in &self.proxied {
            let _ = writeln!(
                text,
                "    ip daddr {SLIRP_GATEWAY} tcp dport {listener} accept"
            );
        }
        for destination in &self.destinations {
            match destination {
                Destination::HostLoopback { port } => {
                    let _ = writeln!(
                        text,
                        "    ip daddr {SLIRP_GATEWAY}{} accept",
                        port_match(*port)
                    );
                }
                Destination::Remote { cidr, port }
                    if cidr.prefix() == 32 && cidr.network() == METADATA_ADDRESS =>
                {
                    let _ = writeln!(text, "    ip daddr {cidr}{} accept", port_match(*port));
                }
                Destination::Remote { cidr, port } => general.push((cidr, port)),
            }
        }
        let _ = writeln!(
            text,
            "    ip daddr {{ {SLIRP_GATEWAY}, {SLIRP_DNS}, {NAMES_ADDRESS}, {METADATA_ADDRESS} }} meta l4proto tcp reject with tcp reset"
        );
        let _ = writeln!(
            text,
            "    ip daddr {{ {SLIRP_GATEWAY}, {SLIRP_DNS}, {NAMES_ADDRESS}, {METADATA_ADDRESS} }} reject with icmpx type admin-prohibited"
        );
        for (cidr, port) in general {
            let _ = writeln!(text, "    ip daddr {cidr}{} accept", port_match(*port));
        }
        let _ = writeln!(text, "    meta l4proto tcp reject with tcp reset");
        let _ = writeln!(text, "    reject with icmpx type admin-prohibited");
        let _ = writeln!(text, "  }}");
        let _ = writeln!(text, "}}");
        text
    }

    /// The session's `/etc/hosts`.
    pub fn hosts(&self) -> String {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        let names_host_loopback = self
            .destinations
            .iter()
            .any(|destination| matches!(destination, Destination::HostLoopback { .. }));
        if names_host_loopback {
            let _ = writeln!(text, "{SLIRP_GATEWAY}\t{HOST_LOOPBACK_NAME}");
        }
        for name in &self.names {
            let _ = writeln!(text, "{NAMES_ADDRESS}\t{name}");
        }
        text
    }

    /// The launcher's part of the setup, with the binaries it runs.
    pub fn setup(&self, slirp4netns: &std::path::Path, nft: &std::path::Path) -> NetworkSetup {
        NetworkSetup {
            slirp4netns: slirp4netns.to_owned(),
            nft: nft.to_owned(),
            ruleset: self.ruleset(),
            hosts: self.hosts(),
            resolv_conf: match self.dns_listener {
                Some(_) => format!("nameserver {SLIRP_DNS}\noptions attempts:2 timeout:2\n"),
                None => "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n".to_owned(),
            },
            host_loopback: self.reaches_host_loopback(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        match text.parse::<corral_core::AllowEntry>().unwrap() {
            corral_core::AllowEntry::Network { cidr, .. } => cidr,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn special_addresses_are_refused_before_wide_networks() {
        let rules = NetworkRules {
            destinations: vec![
                Destination::Remote {
                    cidr: cidr("0.0.0.0/0"),
                    port: None,
                },
                Destination::HostLoopback { port: Some(8080) },
            ],
            names: vec![],
            proxied: vec![],
            dns_listener: None,
            max_connections: 16,
        };
        let text = rules.ruleset();
        let loopback = text
            .find("ip daddr 10.0.2.2 meta l4proto { tcp, udp } th dport 8080 accept")
            .unwrap();
        let refusal = text
            .find("169.254.169.254 } meta l4proto tcp reject")
            .unwrap();
        let wide = text.find("ip daddr 0.0.0.0/0 accept").unwrap();
        assert!(loopback < refusal && refusal < wide, "{text}");
        assert!(text.contains("ct count over 16"));
        assert!(rules.hosts().contains("10.0.2.2\thost.corral.internal"));
    }

    #[test]
    fn metadata_only_when_named() {
        let rules = NetworkRules {
            destinations: vec![Destination::Remote {
                cidr: Ipv4Cidr::host(METADATA_ADDRESS),
                port: Some(80),
            }],
            names: vec!["svc.test".into()],
            proxied: vec![(8080, 40001)],
            dns_listener: Some(40002),
            max_connections: 0,
        };
        let text = rules.ruleset();
        let allowed = text.find("ip daddr 169.254.169.254 meta l4proto").unwrap();
        let refusal = text.find("reject with tcp reset").unwrap();
        assert!(allowed < refusal);
        assert!(!text.contains("ct count"));
        assert!(text.contains("ip daddr 10.0.2.50 tcp dport 8080 dnat to 10.0.2.2:40001"));
        assert!(text.contains("ip daddr 10.0.2.2 tcp dport 40001 accept"));
        assert!(text.contains("ip daddr 10.0.2.3 udp dport 53 dnat to 10.0.2.2:40002"));
        assert!(text.contains("ip daddr 10.0.2.2 udp dport 40002 accept"));
        assert!(rules.hosts().contains("10.0.2.50\tsvc.test"));
        assert!(!rules.hosts().contains(HOST_LOOPBACK_NAME));
        assert!(rules.reaches_host_loopback());
    }
}
