//! One session's proxy listeners: one loopback listener per allowed port, each reading the
//! name a connection asks for, checking it against the session's allow-list, and dialling
//! that name itself (through the operator's name table, else DNS). Listeners end when the
//! [`SessionProxy`] is dropped.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use corral_core::AllowEntry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::requested_name::{requested_name, Requested};

/// Most bytes read while looking for the name.
const MAX_PREAMBLE_BYTES: usize = 16 * 1024;
/// How long a connection may take to say which name it wants.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialling the name may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Refused,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Refused => "refused",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("could not listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// The names a session may reach, and on which ports.
#[derive(Clone, Debug, Default)]
pub struct ProxyPolicy {
    /// `(name, port)`; `None` is the web's ports (80 and 443).
    pub names: Vec<(String, Option<u16>)>,
}

/// Ports a name entry without a port is proxied on.
pub const WEB_PORTS: [u16; 2] = [80, 443];

impl ProxyPolicy {
    /// The name entries of an allow-list.
    pub fn from_entries(entries: &[AllowEntry]) -> Self {
        ProxyPolicy {
            names: entries
                .iter()
                .filter_map(|entry| match entry {
                    AllowEntry::Name { name, port } => Some((name.clone(), *port)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// The session-side ports that need a listener (sorted, unique).
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .names
            .iter()
            .flat_map(|(_, port)| match port {
                Some(port) => vec![*port],
                None => WEB_PORTS.to_vec(),
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Whether `name` may be reached on `port`.
    pub fn allows(&self, name: &str, port: u16) -> bool {
        self.names.iter().any(|(allowed, allowed_port)| {
            allowed == name
                && match allowed_port {
                    Some(allowed_port) => *allowed_port == port,
                    None => WEB_PORTS.contains(&port),
                }
        })
    }
}

/// Names the operator maps to addresses, then the system's resolver.
#[derive(Clone, Debug, Default)]
pub struct NameResolver {
    pub hosts: BTreeMap<String, Ipv4Addr>,
}

impl NameResolver {
    async fn resolve(&self, name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(address) = self.hosts.get(name) {
            return Ok(vec![SocketAddr::from((*address, port))]);
        }
        Ok(tokio::net::lookup_host((name, port)).await?.collect())
    }
}

type DecisionHook = Arc<dyn Fn(Decision) + Send + Sync>;

/// The session-side port that marks the DNS answerer's listener in [`SessionProxy::ports`]
/// (a UDP listener; TCP ports are never 0).
pub const DNS_PORT_MARK: u16 = 0;

/// A session's listeners; dropping it ends them (connections already forwarded end too).
pub struct SessionProxy {
    /// `(session-side port, listener port on 127.0.0.1)`; `(DNS_PORT_MARK, port)` is the DNS
    /// answerer's UDP listener.
    ports: Vec<(u16, u16)>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SessionProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionProxy")
            .field("ports", &self.ports)
            .finish()
    }
}

impl Drop for SessionProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl SessionProxy {
    /// Listens for each of `ports` (`(session-side port, listener port)`, 0 for any free
    /// one; a restarted server passes the ports the session's rules already point at).
    /// `names_address` is what allowed names resolve to inside the session.
    pub async fn bind(
        policy: ProxyPolicy,
        resolver: NameResolver,
        ports: &[(u16, u16)],
        names_address: Ipv4Addr,
        on_decision: DecisionHook,
    ) -> Result<SessionProxy, EgressError> {
        let policy = Arc::new(policy);
        let resolver = Arc::new(resolver);
        let mut proxy = SessionProxy {
            ports: Vec::new(),
            tasks: Vec::new(),
        };
        for &(session_port, listener_port) in ports {
            if session_port == DNS_PORT_MARK {
                let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, listener_port))
                    .await
                    .map_err(|source| EgressError::Bind {
                        port: listener_port,
                        source,
                    })?;
                let bound = socket
                    .local_addr()
                    .map_err(|source| EgressError::Bind {
                        port: listener_port,
                        source,
                    })?
                    .port();
                proxy.ports.push((session_port, bound));
                let policy = policy.clone();
                proxy.tasks.push(tokio::spawn(async move {
                    let mut buffer = [0u8; 512];
                    loop {
                        let Ok((count, from)) = socket.recv_from(&mut buffer).await else {
                            continue;
                        };
                        let allowed = |name: &str| policy.names.iter().any(|(n, _)| n == name);
                        if let Some(reply) =
                            crate::dns_answer(&buffer[..count], allowed, names_address)
                        {
                            let _ = socket.send_to(&reply, from).await;
                        }
                    }
                }));
                continue;
            }
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, listener_port))
                .await
                .map_err(|source| EgressError::Bind {
                    port: listener_port,
                    source,
                })?;
            let bound = listener
                .local_addr()
                .map_err(|source| EgressError::Bind {
                    port: listener_port,
                    source,
                })?
                .port();
            proxy.ports.push((session_port, bound));
            let policy = policy.clone();
            let resolver = resolver.clone();
            let on_decision = on_decision.clone();
            proxy.tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let policy = policy.clone();
                    let resolver = resolver.clone();
                    let on_decision = on_decision.clone();
                    tokio::spawn(async move {
                        let decision = forward(stream, session_port, &policy, &resolver).await;
                        on_decision(decision);
                    });
                }
            }));
        }
        Ok(proxy)
    }

    /// `(session-side port, listener port)` of each listener.
    pub fn ports(&self) -> &[(u16, u16)] {
        &self.ports
    }
}

async fn read_preamble(stream: &mut TcpStream) -> (Vec<u8>, Requested) {
    let mut buffer = Vec::with_capacity(1024);
    let reading = async {
        loop {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Requested::Unknown,
                Ok(count) => buffer.extend_from_slice(&chunk[..count]),
            }
            match requested_name(&buffer) {
                Requested::NeedMore if buffer.len() < MAX_PREAMBLE_BYTES => continue,
                Requested::NeedMore => return Requested::Unknown,
                decided => return decided,
            }
        }
    };
    let requested = tokio::time::timeout(PREAMBLE_TIMEOUT, reading)
        .await
        .unwrap_or(Requested::Unknown);
    (buffer, requested)
}

async fn refuse(mut stream: TcpStream, preamble: &[u8], why: &str) -> Decision {
    // An HTTP client hears why; a TLS one just sees the connection close.
    if preamble.first().is_some_and(|byte| *byte != 0x16) {
        let body = format!("corral: {why}\n");
        let answer = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
    }
    let _ = stream.shutdown().await;
    Decision::Refused
}

async fn forward(
    mut stream: TcpStream,
    port: u16,
    policy: &ProxyPolicy,
    resolver: &NameResolver,
) -> Decision {
    let (preamble, requested) = read_preamble(&mut stream).await;
    let name = match requested {
        Requested::Name(name) => name,
        _ => {
            return refuse(
                stream,
                &preamble,
                "no name (TLS SNI or HTTP Host) in the request",
            )
            .await
        }
    };
    if !policy.allows(&name, port) {
        tracing::debug!(%name, port, "refused a connection to a name not allowed");
        return refuse(
            stream,
            &preamble,
            &format!("{name}:{port} is not allowed for this session"),
        )
        .await;
    }
    let addresses = match resolver.resolve(&name, port).await {
        Ok(addresses) if !addresses.is_empty() => addresses,
        _ => return refuse(stream, &preamble, &format!("{name} does not resolve")).await,
    };
    let mut upstream = None;
    for address in addresses {
        if let Ok(Ok(connected)) =
            tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(address)).await
        {
            upstream = Some(connected);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        return refuse(stream, &preamble, &format!("{name}:{port} did not answer")).await;
    };
    if upstream.write_all(&preamble).await.is_err() {
        return Decision::Allowed;
    }
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
    Decision::Allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_names() {
        let entries: Vec<AllowEntry> = ["pypi.org", "svc.test:8080", "10.0.0.0/8"]
            .iter()
            .map(|text| text.parse().expect("entry"))
            .collect();
        let policy = ProxyPolicy::from_entries(&entries);
        assert_eq!(policy.ports(), vec![80, 443, 8080]);
        assert!(policy.allows("pypi.org", 443));
        assert!(!policy.allows("pypi.org", 8080));
        assert!(policy.allows("svc.test", 8080));
        assert!(!policy.allows("svc.test", 443));
        assert!(!policy.allows("other.test", 80));
    }

    #[tokio::test]
    async fn forwards_allowed_names_and_refuses_others() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_port = upstream.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = upstream.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        let decisions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = decisions.clone();
        let proxy = SessionProxy::bind(
            ProxyPolicy {
                names: vec![("svc.test".into(), Some(upstream_port))],
            },
            NameResolver {
                hosts: [("svc.test".to_owned(), Ipv4Addr::LOCALHOST)].into(),
            },
            &[(upstream_port, 0)],
            Ipv4Addr::new(10, 0, 2, 50),
            Arc::new(move |decision| seen.lock().expect("lock").push(decision)),
        )
        .await
        .expect("proxy");
        let listener = proxy.ports()[0].1;
        for (host, expected) in [("svc.test", "200 OK"), ("other.test", "403 Forbidden")] {
            let mut client = TcpStream::connect(("127.0.0.1", listener))
                .await
                .expect("connect");
            client
                .write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.expect("read");
            assert!(answer.contains(expected), "{host}: {answer}");
        }
        for _ in 0..200 {
            if decisions.lock().expect("lock").len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *decisions.lock().expect("lock"),
            vec![Decision::Allowed, Decision::Refused]
        );
    }
}
