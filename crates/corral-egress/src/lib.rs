//! `corral-egress`: the server's side of sessions' connections to domain names.
//!
//! A session that may reach names sees each allowed name at one synthetic address; its
//! nftables rules redirect TCP to that address to a listener of its own in the server
//! (`proxy`), one per allowed port, because behind slirp4netns the server cannot tell
//! sessions apart otherwise. The listener reads the name the connection asks for — the TLS
//! ClientHello's SNI or the HTTP `Host` header (`requested_name`) — checks it against the
//! session's allow-list and dials the name itself, so a session cannot point an allowed name
//! at another address. The session's DNS questions go to a UDP listener of its own too
//! (`dns_answer`): allowed names resolve to the synthetic address, every other name is
//! NXDOMAIN.
//!
//! Pure tokio, no HTTP framework; deliberately knows nothing of sessions' other state, of
//! the sandbox or of metrics (decisions are reported to a callback).

mod dns_answer;
mod proxy;
mod requested_name;

pub use dns_answer::dns_answer;
pub use proxy::{Decision, EgressError, NameResolver, ProxyPolicy, SessionProxy, DNS_PORT_MARK};
pub use requested_name::{requested_name, Requested};
