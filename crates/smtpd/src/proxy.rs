//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in
//! front of Sluice tells it who the client really is in a header before the
//! first SMTP byte.
//!
//! Only addresses in a listener's `proxy_trusted` list may send one: a
//! header is a claim about someone else's address, and limits, relay checks,
//! filters, logs and `Received:` all believe it. The parsing is `ppp`'s
//! (sans-IO: bytes in, a header or "more" out); this module adds the rules
//! around it: how long a header may be, and what a `LOCAL` or `UNKNOWN`
//! header means (the proxy speaking for itself: keep the socket's address).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult};

/// A v1 header is at most 107 octets (the spec's own bound).
const MAX_V1: usize = 107;
/// A v2 header's own length field allows 64 KiB of TLVs; what proxies send
/// (addresses, a unique id, TLS facts) fits well under this.
pub(crate) const MAX_HEADER: usize = 1024;
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A listener's PROXY protocol settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// Who may send a header.
    pub trusted: Vec<IpNet>,
    /// What to do with a connection from anyone else.
    pub untrusted: UntrustedPeer,
    /// How long a trusted peer may take to send its header.
    pub timeout: Duration,
}

/// What a PROXY listener does with a connection from outside `trusted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntrustedPeer {
    /// Close it (after a `554`): the port is for the proxy alone.
    Refuse,
    /// Serve it as a direct client, with no header expected.
    Direct,
}

impl ProxyProtocol {
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = crate::policy::canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// What the bytes read so far come to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Not a whole header yet.
    Incomplete,
    /// A header of `consumed` octets; `client` and `server` are the
    /// connection's real ends, or `None` for a `LOCAL` / `UNKNOWN` header.
    Header {
        consumed: usize,
        client: Option<SocketAddr>,
        server: Option<SocketAddr>,
    },
    /// Not a PROXY header, or one longer than we take.
    Invalid(String),
}

pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let v2 = buf.starts_with(V2_SIGNATURE) || V2_SIGNATURE.starts_with(buf);
    let limit = if v2 { MAX_HEADER } else { MAX_V1 };
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return if buf.len() >= limit {
            Parsed::Invalid(format!("header longer than {limit} octets"))
        } else {
            Parsed::Incomplete
        };
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            let consumed = header.header.len();
            let (client, server) = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => ends(
                    (a.source_address.into(), a.source_port),
                    (a.destination_address.into(), a.destination_port),
                ),
                ppp::v1::Addresses::Tcp6(a) => ends(
                    (a.source_address.into(), a.source_port),
                    (a.destination_address.into(), a.destination_port),
                ),
                ppp::v1::Addresses::Unknown => (None, None),
            };
            Parsed::Header {
                consumed,
                client,
                server,
            }
        }
        HeaderResult::V2(Ok(header)) => {
            let consumed = header.len();
            if consumed > MAX_HEADER {
                return Parsed::Invalid(format!("header longer than {MAX_HEADER} octets"));
            }
            let addresses = match header.command {
                ppp::v2::Command::Local => ppp::v2::Addresses::Unspecified,
                ppp::v2::Command::Proxy => header.addresses,
            };
            let (client, server) = match addresses {
                ppp::v2::Addresses::IPv4(a) => ends(
                    (a.source_address.into(), a.source_port),
                    (a.destination_address.into(), a.destination_port),
                ),
                ppp::v2::Addresses::IPv6(a) => ends(
                    (a.source_address.into(), a.source_port),
                    (a.destination_address.into(), a.destination_port),
                ),
                ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified => (None, None),
            };
            Parsed::Header {
                consumed,
                client,
                server,
            }
        }
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("bad PROXY v1 header: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("bad PROXY v2 header: {e}")),
    }
}

/// The client's and the server's ends as a header names them.
fn ends(client: (IpAddr, u16), server: (IpAddr, u16)) -> (Option<SocketAddr>, Option<SocketAddr>) {
    (
        Some(SocketAddr::from(client)),
        Some(SocketAddr::from(server)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_gives_the_client_and_leaves_smtp_bytes_alone() {
        let input = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(input),
            Parsed::Header {
                consumed: 44,
                client: Some("192.0.2.7:40000".parse().unwrap()),
                server: Some("198.51.100.1:25".parse().unwrap()),
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n";
        assert!(matches!(parse(v6), Parsed::Header { client: Some(a), .. }
            if a == "[2001:db8::1]:1".parse().unwrap()));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                consumed: 15,
                client: None,
                server: None
            }
        );
    }

    #[test]
    fn partial_headers_wait_and_garbage_is_refused() {
        assert_eq!(parse(b"PROXY TCP4 192.0"), Parsed::Incomplete);
        assert_eq!(parse(b"\r\n\r\n\0\r"), Parsed::Incomplete);
        assert!(matches!(parse(b"EHLO client.test\r\n"), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY TCP4 300.0.0.1 1.2.3.4 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        // No end of line within v1's 107 octets.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(m) if m.contains("107")));
    }

    #[test]
    fn v2_proxy_local_and_oversize() {
        let addresses = [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0, 25];
        let header = v2(1, 0x11, &addresses, &[]);
        let mut input = header.clone();
        input.extend_from_slice(b"EHLO x\r\n");
        assert_eq!(
            parse(&input),
            Parsed::Header {
                consumed: header.len(),
                client: Some("192.0.2.7:40000".parse().unwrap()),
                server: Some("198.51.100.1:25".parse().unwrap()),
            }
        );
        // LOCAL: a health check from the proxy itself.
        let local = v2(0, 0x00, &[], &[]);
        assert!(matches!(
            parse(&local),
            Parsed::Header {
                client: None,
                consumed: 16,
                ..
            }
        ));
        // Half a header waits for the rest.
        assert_eq!(parse(&header[..20]), Parsed::Incomplete);
        // TLVs past the cap: refused once the cap is reached.
        let big = v2(1, 0x11, &addresses, &[0x04; 2000]);
        assert!(matches!(parse(&big[..MAX_HEADER]), Parsed::Invalid(_)));
        assert!(matches!(parse(&big), Parsed::Invalid(_)));
    }

    #[test]
    fn trust_is_by_network_and_sees_through_mapped_addresses() {
        let p = ProxyProtocol {
            trusted: vec!["127.0.0.0/8".parse().unwrap()],
            untrusted: UntrustedPeer::Refuse,
            timeout: Duration::from_secs(5),
        };
        assert!(p.trusts("127.0.0.9".parse().unwrap()));
        assert!(p.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.trusts("192.0.2.1".parse().unwrap()));
    }
}
