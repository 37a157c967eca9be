//! Which name a connection's first bytes ask for: the `server_name` extension of a TLS
//! ClientHello, or the `Host` header of an HTTP/1 request. Pure code.

/// What the first bytes of a connection say so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    /// The name asked for (lower case, without a port).
    Name(String),
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A TLS ClientHello without SNI, an HTTP request without `Host`, or neither protocol.
    Unknown,
}

/// Reads the name a connection asks for from its first `bytes`.
pub fn requested_name(bytes: &[u8]) -> Requested {
    match bytes.first() {
        None => Requested::NeedMore,
        Some(0x16) => tls_server_name(bytes),
        Some(_) => http_host(bytes),
    }
}

fn clean(name: &str) -> Requested {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        Requested::Unknown
    } else {
        Requested::Name(name)
    }
}

fn http_host(bytes: &[u8]) -> Requested {
    let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else {
        return if bytes.len() >= 16 * 1024 {
            Requested::Unknown
        } else {
            Requested::NeedMore
        };
    };
    let Ok(head) = std::str::from_utf8(&bytes[..end]) else {
        return Requested::Unknown;
    };
    for line in head.split("\r\n").skip(1) {
        if let Some((key, value)) = line.split_once(':') {
            if key.trim().eq_ignore_ascii_case("host") {
                let value = value.trim();
                // `name:port`; IPv6 literals are not names.
                let host = match value.rsplit_once(':') {
                    Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
                    _ => value,
                };
                return clean(host);
            }
        }
    }
    Requested::Unknown
}

/// A cursor over a byte slice that fails (None) past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Some(head)
    }

    fn number(&mut self, width: usize) -> Option<usize> {
        Some(
            self.take(width)?
                .iter()
                .fold(0usize, |total, byte| (total << 8) | usize::from(*byte)),
        )
    }

    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let length = self.number(width)?;
        self.take(length)
    }
}

fn tls_server_name(bytes: &[u8]) -> Requested {
    // Record header: type, version (2), length (2); the ClientHello must fit one record.
    if bytes.len() < 5 {
        return Requested::NeedMore;
    }
    let record_length = usize::from(bytes[3]) << 8 | usize::from(bytes[4]);
    if bytes.len() < 5 + record_length {
        return Requested::NeedMore;
    }
    match parse_client_hello(&bytes[5..5 + record_length]) {
        Some(Some(name)) => clean(&name),
        _ => Requested::Unknown,
    }
}

/// `Some(None)`: a ClientHello without SNI; `None`: not a ClientHello.
fn parse_client_hello(record: &[u8]) -> Option<Option<String>> {
    let mut reader = Reader { bytes: record };
    if reader.number(1)? != 1 {
        return None;
    }
    let body = reader.vector(3)?;
    let mut hello = Reader { bytes: body };
    hello.take(2 + 32)?; // version, random
    hello.vector(1)?; // session id
    hello.vector(2)?; // cipher suites
    hello.vector(1)?; // compression methods
    if hello.bytes.is_empty() {
        return Some(None);
    }
    let mut extensions = Reader {
        bytes: hello.vector(2)?,
    };
    while !extensions.bytes.is_empty() {
        let kind = extensions.number(2)?;
        let data = extensions.vector(2)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader {
            bytes: Reader { bytes: data }.vector(2)?,
        };
        while !list.bytes.is_empty() {
            let name_type = list.number(1)?;
            let name = list.vector(2)?;
            if name_type == 0 {
                return Some(std::str::from_utf8(name).ok().map(str::to_owned));
            }
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello record with `name` as SNI (or none).
    fn client_hello(name: Option<&str>) -> Vec<u8> {
        let mut extensions = Vec::new();
        if let Some(name) = name {
            let mut entry = vec![0u8];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            extensions.extend(0u16.to_be_bytes());
            extensions.extend((list.len() as u16).to_be_bytes());
            extensions.extend(list);
        }
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        body.extend((extensions.len() as u16).to_be_bytes());
        body.extend(extensions);
        let mut handshake = vec![1];
        handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend(body);
        let mut record = vec![0x16, 3, 1];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn reads_sni() {
        let hello = client_hello(Some("PyPI.org"));
        assert_eq!(requested_name(&hello), Requested::Name("pypi.org".into()));
        assert_eq!(requested_name(&hello[..20]), Requested::NeedMore);
        assert_eq!(requested_name(&client_hello(None)), Requested::Unknown);
        let mut garbage = hello.clone();
        garbage[5] = 2; // a ServerHello
        assert_eq!(requested_name(&garbage), Requested::Unknown);
    }

    #[test]
    fn reads_the_host_header() {
        let request =
            b"GET /simple/ HTTP/1.1\r\nUser-Agent: pip\r\nhost: Files.Example.com:8080\r\n\r\n";
        assert_eq!(
            requested_name(request),
            Requested::Name("files.example.com".into())
        );
        assert_eq!(
            requested_name(b"GET / HTTP/1.1\r\nHost: a"),
            Requested::NeedMore
        );
        assert_eq!(
            requested_name(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            Requested::Unknown
        );
    }
}
