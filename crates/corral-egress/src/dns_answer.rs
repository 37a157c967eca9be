//! The session's DNS answerer's replies, as pure code: an `A` query for an allowed name is
//! answered with the names address, any other question about an allowed name with no
//! records, and every other name with NXDOMAIN. Only what a stub resolver sends (one
//! question, no compression in it) is understood; anything else gets no answer.

use std::net::Ipv4Addr;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// Seconds an answer may be cached.
const TTL_SECONDS: u32 = 60;

/// The reply to `query`, or `None` when it is not a query this answerer understands.
pub fn dns_answer(
    query: &[u8],
    allowed: impl Fn(&str) -> bool,
    address: Ipv4Addr,
) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let questions = u16::from_be_bytes([query[4], query[5]]);
    if questions != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = usize::from(*query.get(at)?);
        at += 1;
        if length == 0 {
            break;
        }
        if length > 63 {
            return None;
        }
        let label = query.get(at..at + length)?;
        labels.push(std::str::from_utf8(label).ok()?.to_ascii_lowercase());
        at += length;
    }
    let kind = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let class = u16::from_be_bytes([*query.get(at + 2)?, *query.get(at + 3)?]);
    let question_end = at + 4;
    let name = labels.join(".");
    let known = !name.is_empty() && allowed(&name);
    let answer = known && kind == TYPE_A && class == CLASS_IN;
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]);
    // QR, the query's opcode and RD, RA; NXDOMAIN for names the session was not given.
    reply.push(0x80 | (query[2] & 0x79));
    reply.push(if known { 0x80 } else { 0x83 });
    reply.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    reply.extend_from_slice(&query[12..question_end]);
    if answer {
        reply.extend_from_slice(&[0xc0, 12]);
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&CLASS_IN.to_be_bytes());
        reply.extend_from_slice(&TTL_SECONDS.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, kind: u16) -> Vec<u8> {
        let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            bytes.push(label.len() as u8);
            bytes.extend(label.as_bytes());
        }
        bytes.push(0);
        bytes.extend(kind.to_be_bytes());
        bytes.extend(CLASS_IN.to_be_bytes());
        bytes
    }

    #[test]
    fn answers_allowed_names_only() {
        let address = Ipv4Addr::new(10, 0, 2, 50);
        let allowed = |name: &str| name == "pypi.org";
        let reply = dns_answer(&query("PyPI.org", TYPE_A), allowed, address).expect("reply");
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&reply[6..8], &[0, 1], "one answer");
        assert_eq!(&reply[reply.len() - 4..], &address.octets());
        let none = dns_answer(&query("pypi.org", 28), allowed, address).expect("reply");
        assert_eq!((none[3] & 0x0f, none[7]), (0, 0), "AAAA: no records");
        let refused = dns_answer(&query("example.com", TYPE_A), allowed, address).expect("reply");
        assert_eq!(refused[3] & 0x0f, 3, "NXDOMAIN");
        assert_eq!(refused[7], 0);
        assert!(dns_answer(&[0; 5], allowed, address).is_none());
        let mut reply_in = query("pypi.org", TYPE_A);
        reply_in[2] |= 0x80;
        assert!(dns_answer(&reply_in, allowed, address).is_none());
    }
}
